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
non-finite stops at once and is marked failed, never reported (see :mod:`mlc.engine.stage`).
Under torchrun (``torchrun --nproc_per_node N -m mlc.train ...``) each process trains its shard of
every batch through DistributedDataParallel, scores are gathered over processes before any metric
(every test image exactly once), and only rank 0 writes; see docs/distributed.md.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mlc.config.params import EvalParams, LogParams, TrainParams
from mlc.core import distributed as dist
from mlc.core.io import atomic_write_json, atomic_write_stream, atomic_write_text, metric_value, nulls_to_nan, to_json
from mlc.core.progress import StepTicker, duration
from mlc.core.progress import bar as progress_bar
from mlc.core.safe_load import CheckpointError
from mlc.data.transforms import normalize_batch
from mlc.engine import stage
from mlc.engine.logs import RunLogger, result_hparams
from mlc.engine.optim import build_param_groups, build_scheduler, make_adamw
from mlc.engine.precision import Autocast
from mlc.metrics.multilabel import evaluate_scores, mean_average_precision
from mlc.modeling.method import Method


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
                seed: int = 0, sampler=None, persistent_workers: bool = False) -> DataLoader:
    """A DataLoader whose shuffling and worker seeds follow ``seed``; batches in pinned memory when a GPU is
    there (so that copies to it are asynchronous)."""
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False, sampler=sampler,
                      num_workers=num_workers, drop_last=drop_last, generator=g, worker_init_fn=_worker_init,
                      pin_memory=torch.cuda.is_available(), persistent_workers=persistent_workers and num_workers > 0)


@torch.no_grad()
def predict(model: nn.Module, method: Method, loader: DataLoader, device: torch.device, amp: str = "none",
            desc: str = "eval", progress: bool = True, channels_last: bool = False) -> dict:
    """Scores, targets and mean loss over a loader, gathered over processes and put back in dataset order
    (each process scores its shard; :class:`mlc.data.sampler.EvalSampler` gives every image to exactly one);
    ``nonfinite`` counts NaN/inf scores (a diverged model), which no metric may rank."""
    model.eval()
    autocast = Autocast(device, amp)
    scores, targets, indices = [], [], []
    normalize = getattr(getattr(loader, "dataset", None), "device_normalize", None)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)      # on the device: no sync per batch
    n = 0
    for batch in progress_bar(loader, desc=desc, leave=False, disable=not progress or not dist.is_main_process()):
        images, target = to_device(batch, device, channels_last, normalize)
        with autocast():
            out = method.forward_fn(model, images, target)
            loss = method.loss_fn(out, target)["loss"] if method.loss_fn is not None else torch.zeros(())
        scores.append(method.scores_fn(out).float())
        targets.append(target)
        indices.append(batch["index"].to(device))
        loss_sum += loss.detach().double() * len(images)
        n += len(images)
    idx = dist.all_gather_cat(torch.cat(indices))
    s = dist.all_gather_cat(torch.cat(scores))
    t = dist.all_gather_cat(torch.cat(targets))
    # a padding sampler (torch's DistributedSampler) would repeat images: keep the first copy of every index
    order = np.unique(idx.cpu().numpy(), return_index=True)[1]
    loss = dist.all_reduce_sum(torch.stack([loss_sum, torch.tensor(float(n), dtype=torch.float64, device=device)]))
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
    # the CPU threads the run computed with: their count orders the CPU's sums, so it is part of what made the
    # result (the toy Q2L's test mAP differs by points between 1 and 2 threads)
    cpu_threads: int | None = None

    def to_dict(self) -> dict:
        """The result as stored in ``result.json``."""
        return {"best_epoch": self.best_epoch, "best_source": self.best_source, "best_score": self.best_score,
                "history": self.history, "test": self.test, "cpu_threads": self.cpu_threads}


def _load_result(stage_dir: Path) -> FitResult:
    d = json.loads((stage_dir / stage.RESULT).read_text())
    # result.json holds null where a number was NaN (strict JSON): the result reads back as it was returned
    return FitResult(stage_dir, d["best_epoch"], d["best_source"], metric_value(d["best_score"]),
                     nulls_to_nan(d["history"]), nulls_to_nan(d["test"]), d.get("cpu_threads"))


@dataclass
class _State:
    """What ``last.pt`` carries besides the weights: enough to continue exactly where a run stopped."""
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"score": -math.inf, "epoch": -1, "source": "live"})
    next_epoch: int = 0
    stopped: str | None = None            # why training ended early (early stopping); honoured on resume


def fit(method: Method, loaders: dict[str, DataLoader], tp: TrainParams, eval_params: EvalParams,
        stage_dir: str | Path, seed: int = 0, stage_name: str = "main", progress: bool = True,
        make_train_loader: Callable[[int], DataLoader] | None = None, log_params: LogParams | None = None) -> FitResult:
    """Train one stage into ``stage_dir`` (checkpoints/, history.jsonl, result.json) and return its result.

    ``loaders`` holds "val" and "test" loaders; ``make_train_loader(epoch)`` gives the training loader
    of an epoch (seeded per epoch), or ``loaders["train"]`` is used as is.  Under torchrun every process
    calls ``fit`` with its own shard of the data (see :mod:`mlc.data.sampler`); rank 0 writes.

    A finished stage is reused.  Otherwise the stage is locked for this job (a second one gets
    :class:`mlc.engine.stage.StageLockedError`), temporary files of killed writers are removed, and training
    resumes from ``last.pt`` if there is one.  A non-finite loss stops training with
    :class:`TrainingDivergedError` and marks the stage failed (``failed.json``); it is never reported.
    """
    stage_dir = Path(stage_dir)
    if stage.is_finished(stage_dir):
        return _reuse_finished(method, stage_dir)
    threads = torch.get_num_threads()     # a resumed run computes with the count it started with (see _resume)
    with _locked_stage(stage_dir):
        log = log_params if log_params is not None else LogParams(tensorboard=False)
        logger = RunLogger(stage_dir, stage_name, tensorboard=log.tensorboard, wandb=log.wandb,
                           wandb_project=log.wandb_project,
                           enabled=dist.is_main_process(), echo=progress)
        try:
            run = _setup(method, loaders, tp, stage_dir, seed, stage_name, progress, make_train_loader, logger)
            return _fit(run, eval_params)
        finally:
            logger.close()
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)    # the caller's count: the next run in this process starts with it


@contextlib.contextmanager
def _locked_stage(stage_dir: Path):
    """Rank 0 holds the stage's lock for the whole run and clears what a killed run left; the other
    processes learn whether it got the lock, so a refused job stops on every rank."""
    if not dist.is_main_process():
        refused = dist.broadcast_object(None)
        if refused is not None:
            raise stage.StageLockedError(refused)
        yield
        return
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(stage.lock(stage_dir))
        except stage.StageLockedError as e:
            dist.broadcast_object(str(e))
            raise
        dist.broadcast_object(None)
        stage.remove_orphans(stage_dir)
        stage.clear_failed(stage_dir)
        yield


def _reuse_finished(method: Method, stage_dir: Path) -> FitResult:
    result = _load_result(stage_dir)
    best, _ = stage.load_checkpoint(stage_dir / "checkpoints" / "best.pt")
    method.model.load_state_dict(best["model"])
    return result


@dataclass
class _Run:
    """What one stage trains with, built once by :func:`_setup`."""
    method: Method
    model: nn.Module                      # the weights (what checkpoints hold)
    net: nn.Module                        # what the training forward runs: the model, DDP-wrapped and/or compiled
    ddp: nn.Module | None                 # the DDP wrapper (for no_sync while accumulating)
    optimizer: torch.optim.Optimizer
    scheduler: object
    per_iteration: bool                   # scheduler steps per optimizer step (else per epoch, on val mAP)
    ema: object | None
    scaler: torch.amp.GradScaler
    autocast: Autocast
    device: torch.device
    tp: TrainParams
    loaders: dict
    get_train_loader: Callable[[int], DataLoader]
    steps_per_epoch: int                  # optimizer steps (each of accumulate_steps forwards)
    stage_dir: Path
    stage_name: str
    seed: int
    progress: bool
    logger: RunLogger

    @property
    def ckpt_dir(self) -> Path:
        return self.stage_dir / "checkpoints"

    @property
    def show(self) -> bool:
        return self.progress and dist.is_main_process()


def _setup(method: Method, loaders: dict[str, DataLoader], tp: TrainParams, stage_dir: Path, seed: int,
           stage_name: str, progress: bool, make_train_loader: Callable[[int], DataLoader] | None,
           logger: RunLogger) -> _Run:
    """Device, speed switches, process group wrapper, optimizer, schedule, EMA and AMP scaler."""
    device = dist.local_device(pick_device(tp.device))
    logger.info(f"[{stage_name}] device {device}" + (f" (train.device: {tp.device}; {describe_cuda()})"
                                                      if tp.device == "auto" else ""))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = tp.cudnn_benchmark
    model = method.model.to(device)
    channels_last = tp.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if tp.sync_bn and dist.is_dist():
        if device.type == "cuda":
            model = method.model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            logger.info(f"[{stage_name}] train.sync_bn needs CUDA: BatchNorm statistics stay per process")
    optimizer = make_adamw(build_param_groups(model, tp), tp, device)
    net, ddp = model, None
    if dist.is_dist():
        from torch.nn.parallel import DistributedDataParallel
        net = ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if tp.compile:
        net = torch.compile(net)
    get_train_loader = make_train_loader or (lambda epoch: loaders["train"])
    accumulate = tp.accumulate_steps
    steps_per_epoch = len(get_train_loader(0)) // accumulate
    if steps_per_epoch == 0:
        raise ValueError("the training loader is empty (fewer images than one batch with drop_last?)")
    scheduler, per_iteration = build_scheduler(optimizer, tp, steps_per_epoch)
    ema = None
    if tp.ema_decay:
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(model, decay=tp.ema_decay)
    autocast = Autocast(device, tp.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast.dtype == torch.float16)
    per_forward = get_train_loader(0).batch_size
    logger.info(f"[{stage_name}] global batch {per_forward * dist.world_size() * accumulate} = {dist.world_size()} "
                f"process(es) x {per_forward} images x {accumulate} accumulation step(s); "
                f"{steps_per_epoch} optimizer steps per epoch"
                + (f"; autocast {str(autocast.dtype).removeprefix('torch.')}" if autocast.enabled else ""))
    if dist.is_main_process():
        (stage_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    return _Run(method, model, net, ddp, optimizer, scheduler, per_iteration, ema, scaler, autocast, device, tp,
                loaders, get_train_loader, steps_per_epoch, stage_dir, stage_name, seed, progress, logger)


def _resume(run: _Run) -> _State:
    """The state of ``last.pt`` loaded into the model, optimizer, schedule, scaler and EMA (every process reads
    the same file), or a fresh state."""
    if not stage.has_checkpoint(run.stage_dir):
        return _State()
    ck, used = stage.load_checkpoint(run.ckpt_dir / "last.pt", map_location=run.device, fallback=True)
    missing = [k for k in ("model", "optimizer", "scheduler", "scaler", "epoch", "history", "best")
               if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise CheckpointError(f"{used}: not a training checkpoint of this stage (it lacks {', '.join(missing)}; a "
                              f"best.pt holds only the model): put back the run's own last.pt, or delete "
                              f"{run.ckpt_dir} to train from the start")
    try:
        run.model.load_state_dict(ck["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{used}: its model does not fit this stage's model (another method's or another "
                              f"label set's checkpoint?): {first} ...; delete {run.ckpt_dir} to train from the "
                              f"start") from None
    run.optimizer.load_state_dict(ck["optimizer"])
    run.scheduler.load_state_dict(ck["scheduler"])
    run.scaler.load_state_dict(ck["scaler"])
    if run.ema is not None:
        run.ema.module.load_state_dict(ck["ema"])
    state = _State(ck["history"], ck["best"], ck["epoch"] + 1, ck.get("stopped"))
    run.logger.info(f"resuming {run.stage_dir} from epoch {state.next_epoch} (checkpoint {used})"
                    + (f"; training had ended ({state.stopped})" if state.stopped else ""))
    started_with = ck.get("cpu_threads")
    if started_with and started_with != torch.get_num_threads():
        # another thread count would change the order of the CPU's sums, and so the numbers, from here on
        run.logger.info(f"resuming with the {started_with} CPU thread(s) this run started with (this process was "
                        f"given {torch.get_num_threads()})")
        torch.set_num_threads(started_with)
    return state


def _fit(run: _Run, eval_params: EvalParams) -> FitResult:
    tp = run.tp
    state = _resume(run)
    stage_key = int.from_bytes(run.stage_name.encode()[:8].ljust(8, b"\0"), "little") % 2**31
    bad_epochs = max(0, state.next_epoch - state.best["epoch"] - 1)
    for epoch in range(state.next_epoch, tp.epochs if state.stopped is None else state.next_epoch):
        seed_everything(run.seed, stage_key, epoch)
        epoch_start = time.time()
        record = train_one_epoch(run, epoch)
        candidates = {"live": run.model} if run.ema is None else {"live": run.model, "ema": run.ema.module}
        scores = _validate(run.method, candidates, run.loaders, run.device, tp, eval_params, record, run.progress)
        record["epoch_seconds"] = round(time.time() - epoch_start, 2)
        if "live" not in scores:
            _diverged(run.stage_dir, run.model, epoch, None, "the live model's validation scores are not finite")
        bad_epochs = _select_and_checkpoint(run, state, record, scores, candidates, epoch, bad_epochs)
        if state.stopped is not None:
            run.logger.info(state.stopped)
            break
    _maybe_die_for_test("final_test")
    return _final_test(run, state, eval_params)


def _select_and_checkpoint(run: _Run, state: _State, record: dict, scores: dict, candidates: dict, epoch: int,
                           bad_epochs: int) -> int:
    """The end of an epoch: pick the better of live and EMA, keep ``best.pt`` when it improves, decide early
    stopping, write ``last.pt`` and the history, log.  Returns the count of epochs without improvement."""
    tp = run.tp
    source = max(scores, key=lambda k: (scores[k], k == "live"))
    record["selected"] = source
    if not run.per_iteration:
        run.scheduler.step(max(record[f"val_mAP_{s}"] for s in scores))
    improved = scores[source] > state.best["score"]
    if improved:
        state.best = {"score": float(scores[source]), "epoch": epoch, "source": source}
        bad_epochs = 0
        if dist.is_main_process():
            stage.save_checkpoint({"model": candidates[source].state_dict(), "epoch": epoch, "source": source,
                                   "score": state.best["score"]}, run.ckpt_dir / "best.pt")
    else:
        bad_epochs += 1
    record["best_epoch"] = state.best["epoch"]
    state.history.append(record)
    if tp.early_stop_patience is not None and bad_epochs >= tp.early_stop_patience and epoch + 1 < tp.epochs:
        state.stopped = f"early stop after epoch {epoch + 1}: no better {tp.select_on} mAP for {bad_epochs} epochs"
    if dist.is_main_process():
        # the stop decision is saved with the epoch, so a rerun after a kill never trains on
        stage.save_checkpoint({"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                               "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
                               "ema": run.ema.module.state_dict() if run.ema is not None else None,
                               "epoch": epoch, "history": state.history, "best": state.best,
                               "stopped": state.stopped, "cpu_threads": torch.get_num_threads()},
                              run.ckpt_dir / "last.pt", keep_previous=True)
        atomic_write_text(run.stage_dir / "history.jsonl", "".join(to_json(r) + "\n" for r in state.history))
        run.logger.history(state.history)
    run.logger.epoch(record, (epoch + 1) * run.steps_per_epoch)
    seconds = sum(r.get("epoch_seconds", 0) for r in state.history) / max(1, len(state.history))
    run.logger.info(f"[{run.stage_name}] epoch {epoch + 1}/{tp.epochs} loss {record['train_loss']:.4f} "
                    f"val mAP live {100 * record['val_mAP_live']:.2f}"
                    + (f" ema {100 * record['val_mAP_ema']:.2f}" if run.ema is not None else "")
                    + (" *" if improved else "")
                    + (f" ({duration(record['epoch_seconds'])}, ETA {duration(seconds * (tp.epochs - epoch - 1))})"
                       if epoch + 1 < tp.epochs else f" ({duration(record['epoch_seconds'])})"))
    return bad_epochs


def _final_test(run: _Run, state: _State, eval_params: EvalParams) -> FitResult:
    """The selected checkpoint on the test split: metrics, ``test_scores.npz`` and ``result.json``."""
    dist.barrier()                        # rank 0 has written the last best.pt
    best_ck, _ = stage.load_checkpoint(run.ckpt_dir / "best.pt", map_location=run.device)
    run.model.load_state_dict(best_ck["model"])
    pred = predict(run.model, run.method, run.loaders["test"], run.device, run.tp.amp, desc="test",
                   progress=run.progress, channels_last=run.tp.channels_last)
    if pred["nonfinite"]:
        _diverged(run.stage_dir, run.model, state.best["epoch"], None, f"{pred['nonfinite']} non-finite test "
                  f"scores from the best checkpoint {run.ckpt_dir / 'best.pt'}")
    test = evaluate_scores(pred["scores"], pred["targets"], eval_params.ap_mode, eval_params.empty_class,
                           eval_params.threshold, eval_params.top_k)
    test["loss"] = pred["loss"]
    run.logger.test(test, len(state.history) * run.steps_per_epoch)
    run.logger.hparams(result_hparams(run.stage_dir, run.stage_name, {
        "seed": run.seed, "eval": asdict(eval_params), "methods": {run.stage_name: {"train": asdict(run.tp)}}}))
    run.logger.info(f"[{run.stage_name}] test mAP {100 * test['mAP']:.2f} (best epoch {state.best['epoch'] + 1}, "
                    f"{state.best['source']})")
    result = FitResult(run.stage_dir, state.best["epoch"], state.best["source"], state.best["score"], state.history,
                       test, torch.get_num_threads())
    if dist.is_main_process():
        atomic_write_stream(run.stage_dir / "test_scores.npz",
                            lambda f: np.savez_compressed(f, scores=pred["scores"], targets=pred["targets"]))
        atomic_write_json(run.stage_dir / stage.RESULT, result.to_dict())
    dist.barrier()                        # result.json exists before any process returns
    return result


def to_device(batch: dict, device: torch.device, channels_last: bool = False,
              normalize: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's images and targets on the device (asynchronously from pinned memory), in NHWC when asked.
    A uint8 batch (``data.uint8_batches``) travels as uint8 and is normalised there with ``normalize``
    (the dataset's ``device_normalize``: mean, std)."""
    images = batch["image"].to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        if normalize is None:
            raise ValueError("a uint8 image batch without the dataset's device_normalize (mean, std)")
        images = normalize_batch(images, *normalize, channels_last=channels_last)
    if channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, batch["target"].to(device, non_blocking=True)


class _LossMeter:
    """Sums of each loss term weighted by batch size, kept on the device so that no step waits for the GPU;
    read (one synchronisation) at log intervals and at the end of the epoch."""

    def __init__(self, device: torch.device):
        self.device, self.sums, self.n = device, {}, 0

    def add(self, losses: dict, n: int) -> None:
        for key, value in losses.items():
            v = value.detach().float() * n
            self.sums[key] = self.sums[key] + v if key in self.sums else v
        self.n += n

    def means(self, reduce: bool = False) -> dict[str, float]:
        """Mean of every term (over all processes when ``reduce``)."""
        if not self.sums:
            return {}
        keys = sorted(self.sums)
        packed = torch.stack([self.sums[k] for k in keys] + [torch.tensor(float(self.n), device=self.device)])
        if reduce:
            packed = dist.all_reduce_sum(packed)
        values = packed.tolist()
        return {k: v / max(values[-1], 1) for k, v in zip(keys, values[:-1])}


def _scale_tensor(scaler: torch.amp.GradScaler) -> torch.Tensor | None:
    # GradScaler keeps its scale on the device; comparing it before and after update() counts skipped steps
    # without reading it on the host every step (get_scale() would synchronise)
    return getattr(scaler, "_scale", None) if scaler.is_enabled() else None


def gpu_idle_fraction(step_events: list) -> float:
    """The share of the GPU's time from the first step's start to the last step's end in which it had no step
    to run: the gaps between one step's end event and the next one's start, which the GPU reaches only once
    the host has queued it (so a gap is time it waited for the host: the loader, or the host's own work)."""
    torch.cuda.synchronize()
    total = step_events[0][0].elapsed_time(step_events[-1][1])
    gaps = sum(end.elapsed_time(start) for (_, end), (start, _) in zip(step_events, step_events[1:]))
    return round(max(0.0, gaps) / total, 4) if total > 0 else 0.0


def train_one_epoch(run: _Run, epoch: int) -> dict:
    """One pass over the epoch's training loader; returns the epoch's record (mean losses, lr, time).

    Each optimizer step sums the gradients of ``accumulate_steps`` forwards (DDP all-reduces only on the
    last).  Nothing is read back from the GPU between log intervals: the loss terms add up on the device,
    and a non-finite loss is looked for every step on the CPU, every ``log_every`` steps on a GPU (over
    all processes, so every rank stops together).
    """
    tp, model, optimizer, scaler, device = run.tp, run.model, run.optimizer, run.scaler, run.device
    accumulate, channels_last = tp.accumulate_steps, tp.channels_last
    check_every = 1 if device.type == "cpu" else max(1, tp.log_every)
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0, epoch_meter, log_meter = time.time(), _LossMeter(device), _LossMeter(device)
    nonfinite = torch.zeros((), device=device)
    skipped = torch.zeros((), device=device)
    ticker = StepTicker(f"[{run.stage_name}] epoch {epoch + 1}/{tp.epochs}", run.steps_per_epoch,
                        emit=run.logger.info)
    group_names = [g.get("name", str(i)) for i, g in enumerate(optimizer.param_groups)]
    loader = run.get_train_loader(epoch)
    normalize = getattr(getattr(loader, "dataset", None), "device_normalize", None)
    batches = iter(loader)
    bar = progress_bar(range(run.steps_per_epoch), desc=f"{run.stage_name} epoch {epoch + 1}/{tp.epochs}",
                       leave=False, disable=not run.show)
    first_unchecked = 0
    # how long the step waited for the loader, on the host (every device) and, on CUDA, how long the GPU sat idle
    # between steps (an event where each step's work starts and ends, read once at the end of the epoch): a
    # loader that cannot keep up shows here, not in the step time
    data_wait = 0.0
    step_events = [] if device.type == "cuda" else None
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        for micro in range(accumulate):
            waited = time.perf_counter()
            batch = next(batches)
            data_wait += time.perf_counter() - waited
            if step_events is not None and micro == 0:
                step_events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
                step_events[-1][0].record()
            images, target = to_device(batch, device, channels_last, normalize)
            last_micro = micro == accumulate - 1
            with run.ddp.no_sync() if run.ddp is not None and not last_micro else contextlib.nullcontext():
                with run.autocast():
                    out = run.method.forward_fn(run.net, images, target)
                    losses = run.method.loss_fn(out, target)
                nonfinite = torch.maximum(nonfinite, (~torch.isfinite(losses["loss"].detach())).float())
                scaler.scale(losses["loss"] / accumulate).backward()
            epoch_meter.add(losses, len(images))
            log_meter.add(losses, len(images))
        if (step + 1) % check_every == 0 or step + 1 == run.steps_per_epoch:
            # before this step's update: on the CPU the diverged weights are those of the last finite step
            if dist.all_reduce_max(nonfinite.clone()).item() > 0:
                at = step if step == first_unchecked else None
                _diverged(run.stage_dir, model, epoch, at, f"the training loss became non-finite "
                          f"(steps {first_unchecked + 1}-{step + 1} of the epoch)" if at is None else
                          f"the training loss is {float(losses['loss'].detach())}",
                          {k: float(v.detach()) for k, v in losses.items()},
                          before_any_update=epoch == 0 and at == 0,
                          autocast=run.autocast.dtype)
            first_unchecked = step + 1
        if tp.grad_clip_norm:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), tp.grad_clip_norm)
        scale = _scale_tensor(scaler)
        scale_before = scale.clone() if scale is not None else None
        scaler.step(optimizer)
        scaler.update()
        if scale_before is not None:
            skipped += (_scale_tensor(scaler) < scale_before).float()   # fp16 overflow: GradScaler skipped it
        if run.per_iteration:
            run.scheduler.step()
        if run.ema is not None:
            run.ema.update(model)
        if run.method.on_step_end is not None:
            run.method.on_step_end(model, run.ema.module if run.ema is not None else None)
        if step_events is not None:
            step_events[-1][1].record()
        if step % max(1, tp.log_every) == 0 or step + 1 == run.steps_per_epoch:
            means = log_meter.means()
            log_meter = _LossMeter(device)
            run.logger.step(epoch * run.steps_per_epoch + step, means,
                            {n: g["lr"] for n, g in zip(group_names, optimizer.param_groups)})
            if run.show:
                bar.set_postfix(loss=f"{means['loss']:.3f}", lr=f"{optimizer.param_groups[-1]['lr']:.2e}")
        if run.show:
            ticker(step)
        _maybe_die_for_test(epoch * run.steps_per_epoch + step)
    record = {"epoch": epoch, **{f"train_{k}": v for k, v in epoch_meter.means(reduce=True).items()},
              "lr": optimizer.param_groups[-1]["lr"], "train_seconds": round(time.time() - t0, 2)}
    record["data_wait_fraction"] = round(data_wait / max(time.time() - t0, 1e-9), 4)
    if step_events:
        record["gpu_idle_fraction"] = gpu_idle_fraction(step_events)
    if device.type == "cuda":
        record["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    if scaler.is_enabled():
        record["amp_skipped_steps"] = int(dist.all_reduce_max(skipped).item())
    return record


def _validate(method: Method, candidates: dict, loaders, device: torch.device, tp: TrainParams,
              eval_params: EvalParams, record: dict, progress: bool) -> dict:
    """Selection score of every candidate (live, EMA) whose scores are all finite; fills ``record``."""
    scores = {}
    for source, net in candidates.items():
        finite, done = True, {}
        for split in ("val", "test") if tp.select_on == "test" else ("val",):
            loader = loaders[split]
            if id(loader) not in done:        # with select_on: test, val is the test loader: score it once
                done[id(loader)] = predict(net, method, loader, device, tp.amp, desc=f"{split} ({source})",
                                           progress=progress, channels_last=tp.channels_last)
            pred = done[id(loader)]
            m = math.nan
            if pred["nonfinite"]:
                finite = False
                record[f"{split}_nonfinite_{source}"] = pred["nonfinite"]
            else:
                m, _ = mean_average_precision(pred["scores"], pred["targets"], eval_params.ap_mode,
                                              eval_params.empty_class)
                if not np.isfinite(m) and split == tp.select_on:
                    raise ValueError(_no_positives_message(pred["targets"], split, eval_params))
            record[f"{split}_mAP_{source}"] = m
            record[f"{split}_loss_{source}"] = pred["loss"]
        if finite and np.isfinite(record[f"{tp.select_on}_mAP_{source}"]):
            scores[source] = float(record[f"{tp.select_on}_mAP_{source}"])
    return scores


def _no_positives_message(targets: np.ndarray, split: str, eval_params: EvalParams) -> str:
    """Why an mAP of finite scores is NaN: classes without a positive image (all of them when the split has no
    positive label at all, which no ``empty_class`` setting can score)."""
    empty = int(((targets == 1).sum(0) == 0).sum())
    if empty == targets.shape[1]:
        return (f"the {split} mAP is NaN although every score is finite: the {split} split has no positive label at "
                f"all ({targets.shape[0]} images, {targets.shape[1]} classes), so nothing can be ranked. Check its "
                f"manifest (its 'pos' lists) or the method's label_subset")
    return (f"the {split} mAP is NaN although every score is finite: {empty} of {targets.shape[1]} classes have no "
            f"positive image in the {split} split, and eval.empty_class is {eval_params.empty_class!r} (the official "
            f"voc_mAP gives such a class NaN). Models cannot be selected on it: use a {split} split with positives "
            f"for every class, or set eval.empty_class: skip")


def _diverged(stage_dir: Path, model: nn.Module, epoch: int, step: int | None, what: str,
              losses: dict | None = None, before_any_update: bool = False, autocast: torch.dtype | None = None):
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
    if before_any_update:
        # no weight has changed yet, so the learning rate cannot be the cause: the first forward overflows
        advice = ("The loss is non-finite before any weight update, so the learning rate is not the cause: the "
                  "data or the starting weights overflow in the first forward pass"
                  + (" under autocast float16, which overflows above 65504 (train.amp: bf16 or none avoids that)"
                     if autocast == torch.float16 else "")
                  + ". Check the images and the backbone's weights: a deep ResNet without its pretrained weights "
                  "(model.pretrained: false, or a wrong model.backbone_weights) grows its activations past 1e5 "
                  "when its BatchNorm is frozen. Fix that and train again under another run name")
    else:
        advice = "Lower the learning rate (or add train.grad_clip_norm) and train again under another run name"
    raise TrainingDivergedError(
        f"{stage_dir}: training diverged at {where}: {what}. Stopped; {good}; the diverged weights are in "
        f"{ckpt_dir / 'diverged.pt'}. The run is marked failed ({stage_dir / stage.FAILED}) and is not reported. "
        f"{advice}, or delete {stage_dir} to retrain this method.")


def _maybe_die_for_test(point: int | str) -> None:
    """Tests of resumption SIGKILL the process (kill -9) at a step (``MLC_KILL_AT_STEP=6``) or at the start
    of the final test pass (``MLC_KILL_AT=final_test``)."""
    at = os.environ.get("MLC_KILL_AT_STEP") if isinstance(point, int) else os.environ.get("MLC_KILL_AT")
    if at is not None and str(point) == at:
        import signal
        os.kill(os.getpid(), signal.SIGKILL)
