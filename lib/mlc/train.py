"""From params to a trained method: data, loaders, model and loss, then the engine.

    python -m mlc.train params/toy.yaml --method q2l
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass

import torch

from . import distributed as dist
from . import stage
from .cliargs import add_params_arguments, add_train_arguments, load_from_args, train_set_args
from .data.dataset import MultiLabelDataset, check_images
from .data.manifest import Manifest
from .data.sampler import EvalSampler, TrainSampler
from .data.toyworld import generate
from .data.transforms import build_transform
from .engine import FitResult, Method, TrainingDivergedError, fit, make_loader, seed_everything
from .io import exclusive
from .losses import build_loss
from .models.registry import create_model, method_builder
from .params import MethodParams, ParamsError, RunParams
from .rundir import RunConflictError, prepare_run_dir


def prepare_data(params: RunParams, progress: bool = True, source: str | None = None, raw_root: str | None = None,
                 options: dict | None = None) -> Manifest:
    """The run's manifest: the toy world is generated (or reused) here; a real dataset is converted from
    its raw layout the first time (``data.source``, ``data.raw_root``, ``data.source_options``, or the
    arguments, which take precedence) and read afterwards.  A manifest converted with other settings is
    an error, never silently reused."""
    d = params.data
    if d.dataset == "toy" and source in (None, "toy"):
        root = params.dataset_root()
        with exclusive(root.with_name(f".{root.name}.lock"), f"generating the toy world {root}"):
            return generate(root, d.toy, progress=progress)
    source, raw_root = source or d.source, raw_root or d.raw_root
    options = d.source_options if options is None else options
    out = params.resolve_path(d.manifest) if d.manifest else \
        params.resolve_path(params.output_root) / "datasets" / str(source)
    raw_root = str(params.resolve_path(raw_root)) if raw_root else raw_root
    if (out / "meta.json").is_file():              # converted: no lock needed (the folder may be read-only)
        return _read_or_convert(params, out, source, raw_root, options, progress)
    with exclusive(out.with_name(f".{out.name}.lock"), f"converting {source} into {out}"):
        return _read_or_convert(params, out, source, raw_root, options, progress)


def _read_or_convert(params: RunParams, out, source, raw_root, options, progress) -> Manifest:
    if (out / "meta.json").is_file():
        manifest = Manifest(out)
        done = manifest.meta.get("conversion")
        wanted = {"source": source, "raw_root": str(raw_root), "options": options}
        if source and done and (done["source"], done["options"]) != (wanted["source"], wanted["options"]):
            raise ValueError(f"{out} was converted from {done['source']!r} with options {done['options']}, not "
                             f"{source!r} with {options}: use another data.manifest directory or delete {out}")
        return manifest
    if not source:
        raise FileNotFoundError(f"{out / 'meta.json'}: no manifest there; set data.source and data.raw_root in "
                                f"{params.source or 'the params'} to convert the dataset, or run the data-preparation "
                                f"notebook with dataset=... and raw_root=...")
    if not raw_root:
        raise ValueError(f"{params.source}: data.raw_root is needed to convert {source!r} (where the raw dataset is)")
    from .data.datasets import convert_dataset
    if progress:
        print(f"converting {source} from {raw_root} into {out} ...")
    return convert_dataset(source, raw_root, out, **options)


def no_such_method(params: RunParams, name: str) -> str:
    """The error for a method name the params do not define."""
    return f"{params.source}: no method {name!r} under 'methods' (has {', '.join(params.methods)})"


def method_params(params: RunParams, name: str) -> MethodParams:
    """The method's params with run-relative references resolved: ``clip_pretrained: run`` (the run's CLIP,
    see notebook 02) and ``image_checkpoint: run:<method>`` (another method's best checkpoint)."""
    import dataclasses
    if name not in params.methods:
        raise KeyError(no_such_method(params, name))
    mp = params.methods[name]
    cfg, updates = mp.model, {}
    if getattr(cfg, "clip_pretrained", None) == "run":
        if params.clip is None:
            raise ValueError(f"{params.source}: methods.{name}.model.clip_pretrained is 'run' but the params have "
                             f"no 'clip' section")
        from .clip import clip_checkpoint
        updates.update(clip_pretrained=str(clip_checkpoint(params)), clip_model=params.clip.model)
    ref = getattr(cfg, "image_checkpoint", None)
    if isinstance(ref, str) and ref.startswith("run:"):
        updates["image_checkpoint"] = str(params.run_dir / ref[4:] / "checkpoints" / "best.pt")
    return dataclasses.replace(mp, model=dataclasses.replace(cfg, **updates)) if updates else mp


def build_method(mp: MethodParams, num_classes: int, model: torch.nn.Module | None = None,
                 label_names: list[str] | None = None) -> Method:
    """Model (a new one unless given) and how it trains: the model's registered method, or by default
    a closed-set classifier whose outputs carry ``logits``, trained with the params' loss."""
    if model is None:
        model = create_model(mp.model_name, mp.model, num_classes, label_names=label_names)
    builder = method_builder(mp.model_name)
    if builder is not None:
        return builder(model, mp.loss)
    criterion = build_loss(mp.loss)
    return Method(model=model, loss_fn=lambda out, target: {"loss": criterion(out["logits"], target)})


# training labels of each real dataset (open vocabulary: the seen ones), for models built without data
DATASET_CLASSES = {"coco": 80, "voc": 20, "nuswide81": 81, "nuswide_zsl": 925, "openimages": 7186, "vg500": 500}


def untrained_method(mp: MethodParams, num_classes: int, on_meta: bool = False) -> Method:
    """The method at its configured size with random weights, reading no file: no pretrained backbone, CLIP
    or stage-1 checkpoint, word-sum label embeddings, random text embeddings for open-vocabulary label sets.
    For shapes, parameter counts and speed (benchmarks/), never for results.  ``on_meta``: on the meta device
    (closed-set models only; open_clip moves its models, which meta cannot)."""
    import dataclasses
    changes = {"pretrained": False} if hasattr(mp.model, "pretrained") else {}
    for key, value in (("clip_pretrained", None), ("image_checkpoint", None), ("label_embeddings", "words")):
        if hasattr(mp.model, key):
            changes[key] = value
    cfg = dataclasses.replace(mp.model, **changes)
    # a prompt-tuning model (MKT stage 2) needs label names to build its prompts
    names = [f"label {i}" for i in range(num_classes)] if getattr(cfg, "stage", None) == "prompt" else None
    with torch.device("meta") if on_meta else contextlib.nullcontext():
        model = create_model(mp.model_name, cfg, num_classes, label_names=names)
        table = getattr(model, "label_embeddings", None)
        if isinstance(table, torch.Tensor) and not on_meta and not table.any():     # no label names: random ones
            random = torch.nn.functional.normalize(torch.randn(table.shape), dim=-1)
            if hasattr(model, "set_label_embeddings"):
                model.set_label_embeddings(random)
            else:
                with torch.no_grad():
                    table.copy_(random)
    return build_method(dataclasses.replace(mp, model=cfg), num_classes, model=model)


@dataclass
class MethodData:
    manifest: Manifest
    labels: list[int]
    datasets: dict[str, MultiLabelDataset]

    @property
    def label_names(self) -> list[str]:
        """Display names of the method's labels, in column order."""
        return [self.manifest.label_names[i] for i in self.labels]


def method_data(params: RunParams, name: str, manifest: Manifest | None = None) -> MethodData:
    """The method's manifest, label columns and datasets (train, val, test; val = test with ``select_on: test``)."""
    mp = method_params(params, name)
    manifest = manifest or prepare_data(params)
    labels = manifest.label_subset(mp.label_subset)
    train_tf, eval_tf = build_transform(mp.input, train=True), build_transform(mp.input, train=False)
    splits = ["train", "val", "test"]
    if "val" not in manifest.split_names:
        if mp.train.select_on != "test":
            raise ValueError(f"{manifest.root}: the manifest has no 'val' split (splits: {manifest.split_names}); "
                             f"set methods.{name}.train.select_on: test in {params.source} (what the official "
                             f"code does) or convert the dataset with a validation split")
        splits.remove("val")
    datasets = {split: MultiLabelDataset(manifest, split, train_tf if split == "train" else eval_tf, labels)
                for split in splits}
    if "val" not in datasets:            # select_on: test -- the official protocol validates on the test split
        datasets["val"] = datasets["test"]
    return MethodData(manifest, list(labels), datasets)


def check_method_data(data: MethodData, tp, check_files: bool = True, progress: bool = True) -> None:
    """Before any training: every split has images, the training split fills a batch, and (unless
    ``check_files`` is off) every listed image file exists inside the image root."""
    for split, ds in data.datasets.items():
        if len(ds) == 0:
            raise ValueError(f"{ds.parquet_path}: the {split!r} split is empty "
                             f"(0 images); nothing to {'train on' if split == 'train' else 'evaluate'}")
    n_train = len(data.datasets["train"])
    if tp.drop_last and n_train < tp.batch_size:
        raise ValueError(f"{data.datasets['train'].parquet_path}: the train split has {n_train} images, fewer than "
                         f"one batch (train.batch_size {tp.batch_size}) with train.drop_last: lower the batch size")
    if check_files:
        for ds in {id(d): d for d in data.datasets.values()}.values():
            check_images(ds, progress=progress)


def speed_up_data(params: RunParams, mp: MethodParams, data: MethodData, progress: bool = True) -> None:
    """The data switches that change no number: uint8 batches normalised on the device
    (``data.uint8_batches``) and the resized-image cache (``data.image_cache: uint8``).  Both need the
    kit's own transforms, which begin with the deterministic resize (not ``input.timm_augment``)."""
    from .data.image_cache import attach_cache
    from .data.transforms import NORMALIZE, starts_with_resize
    inp, d = mp.input, params.data
    if not starts_with_resize(inp):
        return
    datasets = {id(ds): (split, ds) for split, ds in data.datasets.items()}.values()
    if d.uint8_batches:
        for split, ds in datasets:
            ds.transform = build_transform(inp, train=split == "train", uint8=True)
            ds.device_normalize = NORMALIZE[inp.normalize]
    if d.image_cache == "uint8":
        for _, ds in datasets:
            attach_cache(ds, inp.image_size, d.num_workers, progress)


def per_process_batch(params: RunParams, name: str, world_size: int) -> int:
    """Images per forward in each process: the global ``train.batch_size`` split over the processes and the
    accumulation steps (an error naming the params when it does not divide)."""
    tp = params.methods[name].train
    parts = world_size * tp.accumulate_steps
    if tp.batch_size % parts:
        raise ValueError(f"{params.source}: methods.{name}.train.batch_size {tp.batch_size} (the global batch) does "
                         f"not divide into {world_size} process(es) x {tp.accumulate_steps} accumulation step(s)")
    return tp.batch_size // parts


def train_method(params: RunParams, name: str, progress: bool = True) -> FitResult:
    """Train method ``name`` of the params into ``<run>/<name>/`` (resumes, reuses a finished run); its result.

    With ``train.devices`` above 1, outside torchrun, this launches ``torchrun --nproc_per_node N -m mlc.train``
    and streams its output (see :mod:`mlc.torchrun`).  Under torchrun, rank 0 prepares the run folder and
    the data while the others wait; each process then trains on its shard."""
    mp = method_params(params, name)
    tp = mp.train
    if tp.devices > 1 and not dist.is_dist():
        from .torchrun import train_with_torchrun
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


def load_trained(params: RunParams, name: str, device: str = "cpu") -> torch.nn.Module:
    """The best model of a finished method run, in eval mode."""
    mp = method_params(params, name)
    manifest = prepare_data(params, progress=False)
    labels = manifest.label_subset(mp.label_subset)
    model = create_model(mp.model_name, mp.model, len(labels), label_names=[manifest.label_names[i] for i in labels])
    best = params.run_dir / name / "checkpoints" / "best.pt"
    failed = stage.failure(params.run_dir / name)
    if failed is not None:
        raise RuntimeError(f"{params.run_dir / name}: this run failed ({failed.get('what', failed.get('reason'))}, "
                           f"see {params.run_dir / name / stage.FAILED}); it has no result to load")
    if not best.is_file():
        raise FileNotFoundError(f"{best}: no trained checkpoint; run the training notebook for {name!r} first")
    state = stage.load_checkpoint(best, map_location=device)[0]["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise RuntimeError(f"{best}: checkpoint does not fit model {mp.model_name!r} with "
                           f"{len(manifest.label_subset(mp.label_subset))} classes: {e}") from None
    return model.to(device).eval()


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
    except (TrainingDivergedError, stage.StageLockedError, RunConflictError, dist.PeerFailed) as e:
        if main:                            # every rank stops with the same error; one line says it
            print(f"error ({type(e).__name__}): {e}", file=sys.stderr)
        return 1
    finally:
        dist.shutdown()
    if main:
        print(f"test mAP {100 * result.test['mAP']:.2f} (best epoch {result.best_epoch + 1}, {result.best_source})")
    return 0


def main(argv=None) -> None:
    """``python -m mlc.train PARAMS --method M [--set KEY=VALUE ...]`` (the same as ``mlc train``)."""
    ap = argparse.ArgumentParser(prog="python -m mlc.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_arguments(ap)
    add_train_arguments(ap)
    args = ap.parse_args(argv)
    args.set_args = train_set_args(args)
    try:
        params = load_from_args(args)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_training(params, args.method))


if __name__ == "__main__":
    main()
