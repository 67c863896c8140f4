"""The training engine shared by every method.

A method supplies a :class:`Method`: its model, a loss computed from the model's outputs, and how
outputs turn into scores.  :func:`fit` does the rest for one training stage, with nothing specific
to a method: AdamW over parameter groups with their own learning rates and frozen parts, a
per-iteration (OneCycle, cosine, constant) or per-epoch (ReduceLROnPlateau) schedule, AMP on CUDA,
EMA of the weights, validation each epoch (live and EMA model), the best checkpoint chosen on val
(or on test, as the official repos do, when asked), early stopping, test evaluation at the end,
progress (tqdm bars, or lines under run_all) and logs (history.jsonl / .csv, train.log, TensorBoard).

Every epoch ends with an atomic checkpoint (``checkpoints/last.pt``: model, optimizer, scheduler,
EMA, AMP scaler, best score, history, and whether early stopping has fired).  Rerunning the same
stage after an interruption resumes from it; the random state of every epoch is derived from
(seed, stage, epoch), so a resumed run ends with the same numbers as an uninterrupted one.  A
finished stage (``result.json``) is never trained again.  A run whose loss or live scores become
non-finite stops at once and is marked failed, never reported (see :mod:`mlc.stage`).
Scores are gathered over processes before metrics and only the main process writes, but nothing starts a
process group or shards the data yet: multi-process training is not wired (see docs/methods/q2l.md).
"""
from __future__ import annotations

import contextlib
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

from . import distributed as dist
from . import stage
from .io import atomic_write_stream, atomic_write_text
from .logs import RunLogger
from .method import Method
from .metrics import evaluate_scores, mean_average_precision
from .progress import StepTicker, duration
from .progress import bar as progress_bar


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when torch can use it, else the CPU; ``cuda`` fails at once, with the reason, when torch
    cannot use a GPU (no device, or a driver too old for this torch build); any other name as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for, but torch cannot use a GPU here: "
                           f"{describe_cuda()}. Use device: cpu, or install the torch build that matches the driver")
    return device


def describe_cuda() -> str:
    """What torch found of CUDA: the GPUs, or why there are none (build without CUDA, no device, old driver)."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees {names}"
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.is_available()
    why = f" ({caught[0].message})" if caught else ""
    return (f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but sees no usable GPU "
            f"(no NVIDIA device, or a driver too old for this build){why}")


def seed_everything(*keys: int) -> int:
    """Seed Python, numpy and torch from ``keys`` (e.g. seed, stage, epoch); returns the derived seed."""
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


def is_frozen(name: str, tp) -> bool:
    """Whether parameter ``name`` matches one of ``tp.freeze`` (regular expressions, ``re.search``)."""
    return any(re.search(pat, name) for pat in tp.freeze)


def trainable_parameters(model: nn.Module, tp) -> int:
    """How many parameters training will update: those that require gradients and match no ``tp.freeze``."""
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not is_frozen(n, tp))


def build_param_groups(model: nn.Module, tp) -> list[dict]:
    """Freeze parameters matching ``tp.freeze``; group the others by the first ``tp.param_groups`` match."""
    groups = [{"params": [], "lr_scale": g.lr_scale, "weight_decay": tp.weight_decay if g.weight_decay is None
               else g.weight_decay, "name": g.match} for g in tp.param_groups]
    default = {"params": [], "lr_scale": 1.0, "weight_decay": tp.weight_decay, "name": "default"}
    for name, p in model.named_parameters():
        if is_frozen(name, tp):
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
    """Scores, targets and mean loss over a loader, gathered over processes; ``nonfinite`` counts NaN/inf
    scores (a diverged model), which no metric may rank."""
    model.eval()
    autocast = _Autocast(device, amp)
    scores, targets, indices, loss_sum, n = [], [], [], 0.0, 0
    for batch in progress_bar(loader, desc=desc, leave=False, disable=not progress or not dist.is_main_process()):
        images = batch["image"].to(device, non_blocking=True)
        target = batch["target"].to(device, non_blocking=True)
        with autocast():
            out = method.forward_fn(model, images, target)
            loss = method.loss_fn(out, target)["loss"] if method.loss_fn is not None else torch.zeros(())
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
    scores_np = s.cpu().numpy()[order]
    return {"scores": scores_np, "targets": t.cpu().numpy().astype(np.int8)[order],
            "loss": float(loss[0] / max(loss[1], 1)), "nonfinite": int((~np.isfinite(scores_np)).sum())}


class TrainingDivergedError(RuntimeError):
    """The loss (or the live model's scores) became non-finite; the stage is marked failed."""


@dataclass
class FitResult:
    stage_dir: Path
    best_epoch: int
    best_source: str                      # "live" or "ema"
    best_score: float
    history: list[dict]
    test: dict | None

    def to_dict(self) -> dict:
        """The result as stored in ``result.json``."""
        return {"best_epoch": self.best_epoch, "best_source": self.best_source, "best_score": self.best_score,
                "history": self.history, "test": self.test}


def _load_result(stage_dir: Path) -> FitResult:
    d = json.loads((stage_dir / stage.RESULT).read_text())
    return FitResult(stage_dir, d["best_epoch"], d["best_source"], d["best_score"], d["history"], d["test"])


@dataclass
class _State:
    """What ``last.pt`` carries besides the weights: enough to continue exactly where a run stopped."""
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"score": -math.inf, "epoch": -1, "source": "live"})
    next_epoch: int = 0
    stopped: str | None = None            # why training ended early (early stopping); honoured on resume


def fit(method: Method, loaders: dict[str, DataLoader], tp, eval_params, stage_dir: str | Path, seed: int = 0,
        stage_name: str = "main", progress: bool = True, make_train_loader: Callable[[int], DataLoader] | None = None,
        log_params=None) -> FitResult:
    """Train one stage into ``stage_dir`` (checkpoints/, history.jsonl, result.json) and return its result.

    ``loaders`` holds "val" and "test" loaders; ``make_train_loader(epoch)`` builds the training loader
    of an epoch (so that its shuffling is seeded per epoch), or ``loaders["train"]`` is used as is.

    A finished stage is reused.  Otherwise the stage is locked for this process (a second one gets
    :class:`mlc.stage.StageLockedError`), temporary files of killed writers are removed, and training
    resumes from ``last.pt`` if there is one.  A non-finite loss stops training at once with
    :class:`TrainingDivergedError` and marks the stage failed (``failed.json``); it is never reported.
    """
    stage_dir = Path(stage_dir)
    if stage.is_finished(stage_dir):
        return _reuse_finished(method, stage_dir)
    with stage.lock(stage_dir) if dist.is_main_process() else contextlib.nullcontext():
        if dist.is_main_process():
            stage.remove_orphans(stage_dir)
            stage.clear_failed(stage_dir)
        logger = RunLogger(stage_dir, stage_name, tensorboard=getattr(log_params, "tensorboard", False),
                           wandb=getattr(log_params, "wandb", False),
                           wandb_project=getattr(log_params, "wandb_project", None),
                           enabled=dist.is_main_process(), echo=progress)
        try:
            return _fit(method, loaders, tp, eval_params, stage_dir, seed, stage_name, progress, make_train_loader,
                        logger)
        finally:
            logger.close()


def _reuse_finished(method: Method, stage_dir: Path) -> FitResult:
    result = _load_result(stage_dir)
    best, _ = stage.load_checkpoint(stage_dir / "checkpoints" / "best.pt")
    method.model.load_state_dict(best["model"])
    return result


def _fit(method, loaders, tp, eval_params, stage_dir: Path, seed, stage_name, progress, make_train_loader,
         logger: RunLogger):
    ckpt_dir = stage_dir / "checkpoints"
    if dist.is_main_process():
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    show = progress and dist.is_main_process()
    device = pick_device(tp.device)
    logger.info(f"[{stage_name}] device {device}" + (f" (train.device: {tp.device}; {describe_cuda()})"
                                                      if tp.device == "auto" else ""))
    model = method.model.to(device)
    optimizer = torch.optim.AdamW(build_param_groups(model, tp), lr=tp.lr, weight_decay=tp.weight_decay)
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
    stage_key = int.from_bytes(stage_name.encode()[:8].ljust(8, b"\0"), "little") % 2**31
    last_path = ckpt_dir / "last.pt"

    state = _State()
    if stage.has_checkpoint(stage_dir):
        ck, used = stage.load_checkpoint(last_path, map_location=device, fallback=True)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        if ema is not None:
            ema.module.load_state_dict(ck["ema"])
        state = _State(ck["history"], ck["best"], ck["epoch"] + 1, ck.get("stopped"))
        logger.info(f"resuming {stage_dir} from epoch {state.next_epoch} (checkpoint {used})"
                    + (f"; training had ended ({state.stopped})" if state.stopped else ""))

    bad_epochs = max(0, state.next_epoch - state.best["epoch"] - 1)
    for epoch in range(state.next_epoch, tp.epochs if state.stopped is None else state.next_epoch):
        seed_everything(seed, stage_key, epoch)
        epoch_start = time.time()
        record = _train_one_epoch(method, model, ema, optimizer, scheduler if per_iteration else None, scaler,
                                  autocast, get_train_loader(epoch), device, tp, epoch, steps_per_epoch,
                                  stage_dir, stage_name, show, logger)
        candidates = {"live": model} if ema is None else {"live": model, "ema": ema.module}
        scores = _validate(method, candidates, loaders, device, tp, eval_params, record, progress)
        record["epoch_seconds"] = round(time.time() - epoch_start, 2)
        if "live" not in scores:
            _diverged(stage_dir, model, epoch, None, "the live model's validation scores are not finite")
        source = max(scores, key=lambda k: (scores[k], k == "live"))
        record["selected"] = source
        if not per_iteration:
            scheduler.step(max(record[f"val_mAP_{s}"] for s in scores))
        improved = scores[source] > state.best["score"]
        if improved:
            state.best = {"score": float(scores[source]), "epoch": epoch, "source": source}
            bad_epochs = 0
            if dist.is_main_process():
                stage.save_checkpoint({"model": candidates[source].state_dict(), "epoch": epoch, "source": source,
                                       "score": state.best["score"]}, ckpt_dir / "best.pt")
        else:
            bad_epochs += 1
        record["best_epoch"] = state.best["epoch"]
        state.history.append(record)
        if tp.early_stop_patience is not None and bad_epochs >= tp.early_stop_patience and epoch + 1 < tp.epochs:
            state.stopped = f"early stop after epoch {epoch + 1}: no better {tp.select_on} mAP for {bad_epochs} epochs"
        if dist.is_main_process():
            # the stop decision is saved with the epoch, so a rerun after a kill never trains on
            stage.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                   "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                                   "ema": ema.module.state_dict() if ema is not None else None,
                                   "epoch": epoch, "history": state.history, "best": state.best,
                                   "stopped": state.stopped}, last_path, keep_previous=True)
            atomic_write_text(stage_dir / "history.jsonl", "".join(json.dumps(r) + "\n" for r in state.history))
            logger.history(state.history)
        logger.epoch(record, (epoch + 1) * steps_per_epoch)
        seconds = sum(r.get("epoch_seconds", 0) for r in state.history) / max(1, len(state.history))
        logger.info(f"[{stage_name}] epoch {epoch + 1}/{tp.epochs} loss {record['train_loss']:.4f} "
                    f"val mAP live {100 * record['val_mAP_live']:.2f}"
                    + (f" ema {100 * record['val_mAP_ema']:.2f}" if ema is not None else "")
                    + (" *" if improved else "")
                    + (f" ({duration(record['epoch_seconds'])}, ETA {duration(seconds * (tp.epochs - epoch - 1))})"
                       if epoch + 1 < tp.epochs else f" ({duration(record['epoch_seconds'])})"))
        if state.stopped is not None:
            logger.info(state.stopped)
            break

    _maybe_die_for_test("final_test")
    best_ck, _ = stage.load_checkpoint(ckpt_dir / "best.pt", map_location=device)
    model.load_state_dict(best_ck["model"])
    pred = predict(model, method, loaders["test"], device, tp.amp, desc="test", progress=progress)
    if pred["nonfinite"]:
        _diverged(stage_dir, model, state.best["epoch"], None, f"{pred['nonfinite']} non-finite test scores "
                  f"from the best checkpoint {ckpt_dir / 'best.pt'}")
    test = evaluate_scores(pred["scores"], pred["targets"], eval_params.ap_mode, eval_params.empty_class,
                           eval_params.threshold, eval_params.top_k)
    test["loss"] = pred["loss"]
    logger.test(test, len(state.history) * steps_per_epoch)
    logger.info(f"[{stage_name}] test mAP {100 * test['mAP']:.2f} (best epoch {state.best['epoch'] + 1}, "
                f"{state.best['source']})")
    result = FitResult(stage_dir, state.best["epoch"], state.best["source"], state.best["score"], state.history,
                       test)
    if dist.is_main_process():
        atomic_write_stream(stage_dir / "test_scores.npz",
                            lambda f: np.savez_compressed(f, scores=pred["scores"], targets=pred["targets"]))
        atomic_write_text(stage_dir / stage.RESULT, json.dumps(result.to_dict(), indent=1))
    return result


def _train_one_epoch(method, model, ema, optimizer, step_scheduler, scaler, autocast, loader, device, tp,
                     epoch: int, steps_per_epoch: int, stage_dir: Path, stage_name: str, show: bool,
                     logger: RunLogger) -> dict:
    """One pass over the training loader; returns the epoch's record (mean losses, lr, time)."""
    model.train()
    t0, loss_sums, n_seen, amp_skipped = time.time(), {}, 0, 0
    ticker = StepTicker(f"[{stage_name}] epoch {epoch + 1}/{tp.epochs}", steps_per_epoch, emit=logger.info)
    group_names = [g.get("name", str(i)) for i, g in enumerate(optimizer.param_groups)]
    bar = progress_bar(loader, desc=f"{stage_name} epoch {epoch + 1}/{tp.epochs}", leave=False, disable=not show)
    for step, batch in enumerate(bar):
        images = batch["image"].to(device, non_blocking=True)
        target = batch["target"].to(device, non_blocking=True)
        with autocast():
            out = method.forward_fn(model, images, target)
            losses = method.loss_fn(out, target)
        if not torch.isfinite(losses["loss"].detach()).all():
            # a NaN/inf loss is divergence in every precision (fp16 overflow shows in the gradients, below)
            _diverged(stage_dir, model, epoch, step, f"the training loss is {float(losses['loss'])}",
                      {k: float(v) for k, v in losses.items()})
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        if tp.grad_clip_norm:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), tp.grad_clip_norm)
        scale_before = scaler.get_scale() if scaler.is_enabled() else None
        scaler.step(optimizer)
        scaler.update()
        if scale_before is not None and scaler.get_scale() < scale_before:
            amp_skipped += 1          # fp16 gradients overflowed: GradScaler skipped this step (normal, counted)
        if step_scheduler is not None:
            step_scheduler.step()
        if ema is not None:
            ema.update(model)
        if method.on_step_end is not None:
            method.on_step_end(model, ema.module if ema is not None else None)
        step_losses = {key: float(value.detach()) for key, value in losses.items()}
        for key, value in step_losses.items():
            loss_sums[key] = loss_sums.get(key, 0.0) + value * len(images)
        n_seen += len(images)
        logger.step(epoch * steps_per_epoch + step, step_losses,
                    {n: g["lr"] for n, g in zip(group_names, optimizer.param_groups)})
        if show:
            ticker(step)
        if step % max(1, tp.log_every) == 0:
            bar.set_postfix(loss=f"{losses['loss'].item():.3f}", lr=f"{optimizer.param_groups[-1]['lr']:.2e}")
        _maybe_die_for_test(epoch * steps_per_epoch + step)
    record = {"epoch": epoch, **{f"train_{k}": v / max(n_seen, 1) for k, v in loss_sums.items()},
              "lr": optimizer.param_groups[-1]["lr"], "train_seconds": round(time.time() - t0, 2)}
    if scaler.is_enabled():
        record["amp_skipped_steps"] = amp_skipped
    return record


def _validate(method, candidates: dict, loaders, device, tp, eval_params, record: dict, progress: bool) -> dict:
    """Selection score of every candidate (live, EMA) whose scores are all finite; fills ``record``."""
    scores = {}
    for source, net in candidates.items():
        finite = True
        for split in ("val", "test") if tp.select_on == "test" else ("val",):
            pred = predict(net, method, loaders[split], device, tp.amp, desc=f"{split} ({source})",
                           progress=progress)
            m = math.nan
            if pred["nonfinite"]:
                finite = False
                record[f"{split}_nonfinite_{source}"] = pred["nonfinite"]
            else:
                m, _ = mean_average_precision(pred["scores"], pred["targets"], eval_params.ap_mode,
                                              eval_params.empty_class)
            record[f"{split}_mAP_{source}"] = m
            record[f"{split}_loss_{source}"] = pred["loss"]
        if finite and np.isfinite(record[f"{tp.select_on}_mAP_{source}"]):
            scores[source] = float(record[f"{tp.select_on}_mAP_{source}"])
    return scores


def _diverged(stage_dir: Path, model: nn.Module, epoch: int, step: int | None, what: str,
              losses: dict | None = None):
    """Keep the diverged weights for inspection, mark the stage failed and stop (as the official Q2L
    code does with its ``checkpoint_nan``)."""
    ckpt_dir = stage_dir / "checkpoints"
    last_good = next((p for p in (ckpt_dir / "last.pt", ckpt_dir / "best.pt") if p.is_file()), None)
    where = f"epoch {epoch + 1}" + (f", step {step + 1}" if step is not None else "")
    info = {"reason": "diverged", "what": what, "epoch": epoch + 1, "step": None if step is None else step + 1,
            "losses": losses, "last_good_checkpoint": str(last_good) if last_good else None}
    if dist.is_main_process():
        stage.save_checkpoint({"model": model.state_dict(), **info}, ckpt_dir / "diverged.pt")
        stage.mark_failed(stage_dir, info)
    good = (f"the last good checkpoint is {last_good}" if last_good else "no epoch finished before it, so there is "
            "no good checkpoint")
    raise TrainingDivergedError(
        f"{stage_dir}: training diverged at {where}: {what}. Stopped; {good}; the diverged weights are in "
        f"{ckpt_dir / 'diverged.pt'}. The run is marked failed ({stage_dir / stage.FAILED}) and is not reported. "
        f"Lower the learning rate (or add train.grad_clip_norm) and train again under another run name, or "
        f"delete {stage_dir} to retrain this method.")


def _maybe_die_for_test(point: int | str) -> None:
    """Tests of resumption SIGKILL the process (kill -9) at a step (``MLC_KILL_AT_STEP=6``) or at the start
    of the final test pass (``MLC_KILL_AT=final_test``)."""
    at = os.environ.get("MLC_KILL_AT_STEP") if isinstance(point, int) else os.environ.get("MLC_KILL_AT")
    if at is not None and str(point) == at:
        import signal
        os.kill(os.getpid(), signal.SIGKILL)
