"""From params to a trained method: data, loaders, model and loss, then the engine.

    python -m mlc.train params/toy.yaml --method q2l
"""
from __future__ import annotations

import importlib.util
import sys

from mlc.config.params import RunParams
from mlc.core import distributed as dist
from mlc.core.safe_load import CheckpointError
from mlc.data.sampler import EvalSampler, TrainSampler
from mlc.engine import stage
from mlc.engine.loop import FitResult, TrainingDivergedError, fit, make_loader, seed_everything
from mlc.engine.rundir import RunConflictError, prepare_run_dir
from mlc.runs.build import build_method
from mlc.runs.data import check_method_data, method_data, speed_up_data
from mlc.runs.resolve import method_params, no_such_method
from mlc.runs.torchrun import train_with_torchrun


def per_process_batch(params: RunParams, name: str, world_size: int) -> int:
    """Images per forward in each process: the global ``train.batch_size`` split over the processes and the
    accumulation steps (an error naming the params when it does not divide)."""
    tp = params.methods[name].train
    parts = world_size * tp.accumulate_steps
    if tp.batch_size % parts:
        raise ValueError(f"{params.source}: methods.{name}.train.batch_size {tp.batch_size} (the global batch) does "
                         f"not divide into {world_size} process(es) x {tp.accumulate_steps} accumulation step(s)")
    return tp.batch_size // parts


def refuse_untrainable(params: RunParams, name: str, mp) -> None:
    """Settings that can load a model but not train one, refused before anything is written."""
    if getattr(mp.model, "label_embeddings", None) == "checkpoint":
        # the table would be the zeros a released file fills: every label would attend the same way
        raise ValueError(f"{params.source}: methods.{name}.model.label_embeddings is 'checkpoint', which only loads "
                         f"released weights (the file holds the table); to train, set it to 'words', 'bert', "
                         f"'random' or an embedding file")
    if params.log.wandb and importlib.util.find_spec("wandb") is None:
        raise ValueError(f"{params.source}: log.wandb is true but wandb is not installed in this environment: "
                         f"pip install wandb, or set log.wandb: false (TensorBoard logs are written either way)")


def train_method(params: RunParams, name: str, progress: bool = True) -> FitResult:
    """Train method ``name`` of the params into ``<run>/<name>/`` (resumes, reuses a finished run); its result.

    With ``train.devices`` above 1, outside torchrun, this launches ``torchrun --nproc_per_node N -m mlc.train``
    and streams its output (see :mod:`mlc.runs.torchrun`).  Under torchrun, rank 0 prepares the run folder and
    the data while the others wait; each process then trains on its shard."""
    mp = method_params(params, name)
    tp = mp.train
    refuse_untrainable(params, name, mp)
    if tp.devices > 1 and not dist.is_dist():
        return train_with_torchrun(params, name, tp.devices, progress=progress)
    world, rank = dist.world_size(), dist.rank()
    per_process = per_process_batch(params, name, world)
    with dist.main_first():
        run_dir = prepare_run_dir(params) if dist.is_main_process() else params.run_dir
        data = method_data(params, name)
        if dist.is_main_process() and not stage.is_finished(run_dir / name):
            check_method_data(data, tp, params.data.check_images, progress)
        speed_up_data(params, mp, data, progress and dist.is_main_process())
    workers = params.data.num_workers
    train_set = data.datasets["train"]
    sampler = TrainSampler(len(train_set), rank, world)
    # one loader for the whole run: its workers persist across epochs, and the sampler hands each image
    # its epoch's augmentation seed, so the batches do not depend on the number of workers or processes
    train_loader = make_loader(train_set, per_process, shuffle=False, num_workers=workers, drop_last=tp.drop_last,
                               sampler=sampler, persistent_workers=True)

    def epoch_loader(epoch: int):
        sampler.set_epoch(seed_everything(params.seed, 17, epoch))
        return train_loader

    loaders = {split: make_loader(data.datasets[split], tp.eval_batch_size, shuffle=False, num_workers=workers,
                                  sampler=EvalSampler(len(data.datasets[split]), rank, world),
                                  persistent_workers=True)
               for split in ("val", "test")}
    if loaders["val"].dataset is loaders["test"].dataset:
        loaders["val"] = loaders["test"]
    seed_everything(params.seed)
    method = build_method(mp, len(data.labels), label_names=data.label_names)
    return fit(method, loaders, tp, params.eval, run_dir / name, seed=params.seed, stage_name=name,
               progress=progress, make_train_loader=epoch_loader, log_params=params.log)


def run_training(params: RunParams, name: str) -> int:
    """Train ``name`` and print its test mAP; a diverged run, a locked stage or a run conflict is one clear
    line on stderr and exit code 1 (what ``python -m mlc.train`` and ``mlc train`` return).  Under torchrun
    this process joins the job first; rank 0 prints."""
    if name not in params.methods:
        print(f"error: {no_such_method(params, name)}", file=sys.stderr)
        return 2
    dist.init_from_env(params.methods[name].train.device)
    main = dist.is_main_process()
    try:
        result = train_method(params, name)
    except (TrainingDivergedError, stage.StageLockedError, RunConflictError, dist.PeerFailed, CheckpointError) as e:
        if main:                            # every rank stops with the same error; one line says it
            print(f"error ({type(e).__name__}): {e}", file=sys.stderr)
        return 1
    finally:
        dist.shutdown()
    if main:
        print(f"test mAP {100 * result.test['mAP']:.2f} (best epoch {result.best_epoch + 1}, {result.best_source})")
        print(f"run folder: {params.run_dir / name}")
    return 0


