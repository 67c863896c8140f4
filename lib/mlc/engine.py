"""The training engine shared by every method.

A method supplies a :class:`Method`: its model, a loss computed from the model's outputs, and how
outputs turn into scores.  :func:`fit` does the rest for one training stage, with nothing specific
to a method: AdamW over parameter groups with their own learning rates and frozen parts, a
per-iteration (OneCycle, cosine, constant) or per-epoch (ReduceLROnPlateau) schedule, AMP on CUDA,
EMA of the weights, validation each epoch (live and EMA model), the best checkpoint chosen on val
(or on test, as the official repos do, when asked), early stopping, test evaluation at the end,
tqdm progress and a per-epoch JSON-lines log.

Every epoch ends with an atomic checkpoint (``checkpoints/last.pt``: model, optimizer, scheduler,
EMA, AMP scaler, best score, history).  Rerunning the same stage after an interruption resumes from
it; the random state of every epoch is derived from (seed, stage, epoch), so a resumed run ends
with the same numbers as an uninterrupted one.  A finished stage (``result.json``) is never trained
again.  Multi-process ready: scores are gathered before metrics, only the main process writes.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import distributed as dist
from .io import atomic_write, atomic_write_text
from .metrics import evaluate_scores, mean_average_precision


def _forward_images(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict:
    return model(images)


@dataclass
class Method:
    """What a method gives the engine."""
    model: nn.Module
    loss_fn: Callable[[dict, torch.Tensor], dict]          # (outputs, targets) -> {"loss": scalar, ...}
    scores_fn: Callable[[dict], torch.Tensor] = field(default=lambda out: torch.sigmoid(out["logits"].float()))
    # (model, images, targets) -> outputs; SALGL passes the targets on (its memory counts them in training)
    forward_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], dict] = _forward_images
    # (model, ema_model or None) after each optimizer step and EMA update
    on_step_end: Callable[[nn.Module, nn.Module | None], None] | None = None


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(*keys: int) -> int:
    seed = int(np.random.SeedSequence(list(keys)).generate_state(1)[0])
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def _worker_init(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def make_loader(dataset, batch_size: int, shuffle: bool, num_workers: int = 0, drop_last: bool = False,
                seed: int = 0, sampler=None) -> DataLoader:
    """A DataLoader whose shuffling and worker seeds follow ``seed`` (set per epoch by the engine)."""
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False, sampler=sampler,
                      num_workers=num_workers, drop_last=drop_last, generator=g, worker_init_fn=_worker_init,
                      pin_memory=torch.cuda.is_available(), persistent_workers=False)


def _atomic_torch_save(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def build_param_groups(model: nn.Module, tp) -> list[dict]:
    """Freeze parameters matching ``tp.freeze``; group the others by the first ``tp.param_groups`` match."""
    groups = [{"params": [], "lr_scale": g.lr_scale, "weight_decay": tp.weight_decay if g.weight_decay is None
               else g.weight_decay, "name": g.match} for g in tp.param_groups]
    default = {"params": [], "lr_scale": 1.0, "weight_decay": tp.weight_decay, "name": "default"}
    for name, p in model.named_parameters():
        if any(re.search(pat, name) for pat in tp.freeze):
            p.requires_grad_(False)
        if not p.requires_grad:
            continue
        for spec, group in zip(tp.param_groups, groups):
            if re.search(spec.match, name):
                group["params"].append(p)
                break
        else:
            default["params"].append(p)
    out = [g for g in groups + [default] if g["params"]]
    for g in out:
        g["lr"] = tp.lr * g["lr_scale"]
    if not out:
        raise ValueError("every parameter is frozen: nothing to train (check train.freeze)")
    return out


def build_scheduler(optimizer, tp, steps_per_epoch: int):
    """Returns (scheduler, per_iteration)."""
    total = tp.epochs * steps_per_epoch
    if tp.scheduler == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total,
                                                   pct_start=tp.pct_start), True
    if tp.scheduler == "cosine":
        warm = tp.warmup_epochs * steps_per_epoch
        floor = tp.min_lr / tp.lr if tp.lr > 0 else 0.0

        def factor(step):
            if step < warm:
                return step / warm
            progress = (step - warm) / max(1, total - warm)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True
    if tp.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=tp.plateau_factor,
                                                          patience=tp.plateau_patience), False
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0), True


class _Autocast:
    def __init__(self, device: torch.device, amp: str):
        self.enabled = device.type == "cuda" and amp != "none"
        self.dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        self.device_type = device.type

    def __call__(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)


@torch.no_grad()
def predict(model: nn.Module, method: Method, loader: DataLoader, device: torch.device, amp: str = "none",
            desc: str = "eval", progress: bool = True) -> dict:
    """Scores, targets and mean loss over a loader, gathered over processes."""
    model.eval()
    autocast = _Autocast(device, amp)
    scores, targets, indices, loss_sum, n = [], [], [], 0.0, 0
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress or not dist.is_main_process()):
        images = batch["image"].to(device, non_blocking=True)
        target = batch["target"].to(device, non_blocking=True)
        with autocast():
            out = method.forward_fn(model, images, target)
            loss = method.loss_fn(out, target)["loss"]
        scores.append(method.scores_fn(out).float())
        targets.append(target)
        indices.append(batch["index"].to(device))
        loss_sum += float(loss) * len(images)
        n += len(images)
    idx = dist.all_gather_cat(torch.cat(indices))
    s = dist.all_gather_cat(torch.cat(scores))
    t = dist.all_gather_cat(torch.cat(targets))
    # a distributed sampler pads with duplicates: keep the first copy of every index
    order = np.unique(idx.cpu().numpy(), return_index=True)[1]
    loss = dist.all_reduce_sum(torch.tensor([loss_sum, n], dtype=torch.float64, device=device))
    return {"scores": s.cpu().numpy()[order], "targets": t.cpu().numpy().astype(np.int8)[order],
            "loss": float(loss[0] / max(loss[1], 1))}


@dataclass
class FitResult:
    stage_dir: Path
    best_epoch: int
    best_source: str                      # "live" or "ema"
    best_score: float
    history: list[dict]
    test: dict | None

    def to_dict(self) -> dict:
        return {"best_epoch": self.best_epoch, "best_source": self.best_source, "best_score": self.best_score,
                "history": self.history, "test": self.test}


def _load_result(stage_dir: Path) -> FitResult:
    d = json.loads((stage_dir / "result.json").read_text())
    return FitResult(stage_dir, d["best_epoch"], d["best_source"], d["best_score"], d["history"], d["test"])


def fit(method: Method, loaders: dict[str, DataLoader], tp, eval_params, stage_dir: str | Path, seed: int = 0,
        stage: str = "main", progress: bool = True, make_train_loader: Callable[[int], DataLoader] | None = None
        ) -> FitResult:
    """Train one stage into ``stage_dir`` (checkpoints/, history.jsonl, result.json) and return its result.

    ``loaders`` holds "val" and "test" loaders; ``make_train_loader(epoch)`` builds the training loader
    of an epoch (so that its shuffling is seeded per epoch), or ``loaders["train"]`` is used as is.
    """
    stage_dir = Path(stage_dir)
    ckpt_dir = stage_dir / "checkpoints"
    if (stage_dir / "result.json").is_file():
        result = _load_result(stage_dir)
        best = torch.load(ckpt_dir / "best.pt", map_location="cpu", weights_only=False)
        method.model.load_state_dict(best["model"])
        return result
    if dist.is_main_process():
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(tp.device)
    model = method.model.to(device)
    groups = build_param_groups(model, tp)
    optimizer = torch.optim.AdamW(groups, lr=tp.lr, weight_decay=tp.weight_decay)
    get_train_loader = make_train_loader or (lambda epoch: loaders["train"])
    steps_per_epoch = len(get_train_loader(0))
    if steps_per_epoch == 0:
        raise ValueError("the training loader is empty (fewer images than one batch with drop_last?)")
    scheduler, per_iteration = build_scheduler(optimizer, tp, steps_per_epoch)
    ema = None
    if tp.ema_decay:
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(model, decay=tp.ema_decay)
    autocast = _Autocast(device, tp.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast.enabled and autocast.dtype == torch.float16)
    stage_key = int.from_bytes(stage.encode()[:8].ljust(8, b"\0"), "little") % 2**31

    history: list[dict] = []
    best = {"score": -math.inf, "epoch": -1, "source": "live"}
    start_epoch = 0
    last_path = ckpt_dir / "last.pt"
    if last_path.is_file():
        ck = torch.load(last_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        if ema is not None:
            ema.module.load_state_dict(ck["ema"])
        history, best, start_epoch = ck["history"], ck["best"], ck["epoch"] + 1
        if progress and dist.is_main_process():
            print(f"resuming {stage_dir} from epoch {start_epoch} (checkpoint {last_path})")

    bad_epochs = max(0, start_epoch - best["epoch"] - 1)
    for epoch in range(start_epoch, tp.epochs):
        seed_everything(seed, stage_key, epoch)
        loader = get_train_loader(epoch)
        model.train()
        t0, loss_sums, n_seen = time.time(), {}, 0
        bar = tqdm(loader, desc=f"{stage} epoch {epoch + 1}/{tp.epochs}", leave=False,
                   disable=not progress or not dist.is_main_process())
        for step, batch in enumerate(bar):
            images = batch["image"].to(device, non_blocking=True)
            target = batch["target"].to(device, non_blocking=True)
            with autocast():
                out = method.forward_fn(model, images, target)
                losses = method.loss_fn(out, target)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            if tp.grad_clip_norm:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), tp.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            if per_iteration:
                scheduler.step()
            if ema is not None:
                ema.update(model)
            if method.on_step_end is not None:
                method.on_step_end(model, ema.module if ema is not None else None)
            for key, value in losses.items():
                loss_sums[key] = loss_sums.get(key, 0.0) + float(value.detach()) * len(images)
            n_seen += len(images)
            if step % max(1, tp.log_every) == 0:
                bar.set_postfix(loss=f"{losses['loss'].item():.3f}", lr=f"{optimizer.param_groups[-1]['lr']:.2e}")
            _maybe_die_for_test(epoch * steps_per_epoch + step)

        record = {"epoch": epoch, **{f"train_{k}": v / max(n_seen, 1) for k, v in loss_sums.items()},
                  "lr": optimizer.param_groups[-1]["lr"], "train_seconds": round(time.time() - t0, 2)}
        candidates = {"live": model} if ema is None else {"live": model, "ema": ema.module}
        scores = {}
        for source, net in candidates.items():
            for split in ("val", "test") if tp.select_on == "test" else ("val",):
                pred = predict(net, method, loaders[split], device, tp.amp, desc=f"{split} ({source})",
                               progress=progress)
                m, _ = mean_average_precision(pred["scores"], pred["targets"], eval_params.ap_mode,
                                              eval_params.empty_class)
                record[f"{split}_mAP_{source}"] = m
                record[f"{split}_loss_{source}"] = pred["loss"]
            scores[source] = record[f"{tp.select_on}_mAP_{source}"]
        source = max(scores, key=lambda k: (np.nan_to_num(scores[k], nan=-1.0), k == "live"))
        record["selected"] = source
        if not per_iteration:
            scheduler.step(np.nan_to_num(record["val_mAP_live"] if ema is None else max(
                record["val_mAP_live"], record["val_mAP_ema"]), nan=0.0))
        improved = scores[source] > best["score"]
        if improved:
            best = {"score": float(scores[source]), "epoch": epoch, "source": source}
            bad_epochs = 0
            if dist.is_main_process():
                _atomic_torch_save({"model": candidates[source].state_dict(), "epoch": epoch, "source": source,
                                    "score": best["score"]}, ckpt_dir / "best.pt")
        else:
            bad_epochs += 1
        record["best_epoch"] = best["epoch"]
        history.append(record)
        if dist.is_main_process():
            _atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                                "ema": ema.module.state_dict() if ema is not None else None,
                                "epoch": epoch, "history": history, "best": best}, last_path)
            atomic_write_text(stage_dir / "history.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        if progress and dist.is_main_process():
            print(f"[{stage}] epoch {epoch + 1}/{tp.epochs} loss {record['train_loss']:.4f} "
                  f"val mAP live {100 * record['val_mAP_live']:.2f}"
                  + (f" ema {100 * record['val_mAP_ema']:.2f}" if ema is not None else "")
                  + (" *" if improved else ""))
        if tp.early_stop_patience is not None and bad_epochs >= tp.early_stop_patience:
            if progress and dist.is_main_process():
                print(f"early stop: no better {tp.select_on} mAP for {bad_epochs} epochs")
            break

    best_ck = torch.load(ckpt_dir / "best.pt", map_location=device, weights_only=False)
    model.load_state_dict(best_ck["model"])
    pred = predict(model, method, loaders["test"], device, tp.amp, desc="test", progress=progress)
    test = evaluate_scores(pred["scores"], pred["targets"], eval_params.ap_mode, eval_params.empty_class,
                           eval_params.threshold, eval_params.top_k)
    test["loss"] = pred["loss"]
    result = FitResult(stage_dir, best["epoch"], best["source"], best["score"], history, test)
    if dist.is_main_process():
        np.savez_compressed(stage_dir / "test_scores.npz", scores=pred["scores"], targets=pred["targets"])
        atomic_write_text(stage_dir / "result.json", json.dumps(result.to_dict(), indent=1))
    return result


def _maybe_die_for_test(global_step: int) -> None:
    """Tests of resumption set MLC_KILL_AT_STEP: the process SIGKILLs itself at that step (kill -9)."""
    at = os.environ.get("MLC_KILL_AT_STEP")
    if at is not None and global_step == int(at):
        import signal
        os.kill(os.getpid(), signal.SIGKILL)
