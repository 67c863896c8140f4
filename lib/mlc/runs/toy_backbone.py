"""The toy backbone's "ImageNet" pretraining: the toy CNN trained supervised on single objects
(:mod:`mlc.data.toy_imagenet`), the weights the kit ships for ``toy_cnn`` (``pretrained: true``), their
held-out accuracy, and their provenance.

    python -m mlc.runs.toy_backbone [--out lib/mlc/modeling/toy_weights/toy_cnn_imagenet.pt]

writes three files: the backbone (the state dict of the ``toy_cnn`` Sequential, as ``model.backbone_weights``
loads a torchvision file), its classifier (``<stem>.head.pt``: the linear layer on the pooled features, kept only
to measure the accuracy), and ``<stem>.json``: the command, recipe, seed, commit, held-out accuracy overall and by
object size, time and the CPU it ran on.  The default ``--out`` is the shipped file.

The recipe runs in fp32 on a fixed number of CPU threads (restored afterwards), so that the same CPU kind and
torch give the same bits: ``tests/test_toy_backbone.py`` regenerates the weights and compares them with the
shipped ones (bit for bit on the kind of CPU that made them, within a measured tolerance on another).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mlc.core.io import atomic_write_json, atomic_write_stream
from mlc.core.safe_load import load_torch
from mlc.data.toy_imagenet import CLASSES, SIZE_BINS, SingleObjects, single_objects
from mlc.data.transforms import NORMALIZE, normalize_batch
from mlc.modeling.backbones import TOY_CNN_WEIGHTS, backbone_spec, create_backbone, toy_cnn

COMMAND = "python -m mlc.runs.toy_backbone"
FIRST_STEPS = 16    # the provenance fingerprints the backbone after these steps: what every CI run regenerates


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the pretrained weights (with the CPU kind and torch version: :func:`cpu_kind`)."""
    seed: int = 0
    n_train: int = 24576         # fresh single-object images (generated from the seed, in memory)
    n_test: int = 2048           # held out: another random stream of the same seed
    epochs: int = 16             # about 18 minutes on 2 cores; 4 epochs of 8,192 images reached only 15 % top-1
    batch_size: int = 128
    lr: float = 4e-3             # AdamW, one-cycle schedule
    weight_decay: float = 0.05
    image_size: int = 64
    normalize: str = "imagenet"  # as the toy params normalise their inputs (input.normalize)
    channels_last: bool = True   # NHWC for oneDNN's convolutions, as the toy params train
    threads: int = 2             # fixed: the split of every float sum across threads is part of the bits


# ------------------------------------------------------------------------------------------------
# The CPU kind: what decides the float bits besides the recipe
# ------------------------------------------------------------------------------------------------
_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512dq", "avx512bw", "avx512vl",
              "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve")
_DISPATCH_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")


def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        out.setdefault(key.strip(), value.strip())
    return out


def _caches() -> list[str]:
    """The first CPU's caches, e.g. ``["L1d 48K", "L2 2048K", ...]`` (oneDNN sizes its blocks to them)."""
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    out = []
    for index in sorted(root.glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        out.append(f"L{level}{'d' if kind == 'Data' else 'i' if kind == 'Instruction' else ''} {size}")
    return out


def cpu_kind(threads: int) -> dict:
    """What, besides the recipe, decides the bits of a CPU training in fp32: torch's version (and so its oneDNN
    and MKL), the kernels it dispatches to (ATen's CPU capability, the ISA flags oneDNN and MKL choose by), the
    processor model and caches (oneDNN's blocking), the thread count, and any environment variable that overrides
    the dispatch."""
    info = _cpuinfo()
    flags = set(info.get("flags", info.get("Features", "")).split())
    return {
        "torch": torch.__version__,
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "cpu": info.get("model name", platform.processor() or "unknown"),
        "cpuid": " ".join(f"{k} {info[k]}" for k in ("vendor_id", "cpu family", "model", "stepping") if k in info),
        "isa": [f for f in _ISA_FLAGS if f in flags],
        "caches": _caches(),
        "threads": threads,
        "dispatch_env": {k: os.environ[k] for k in _DISPATCH_ENV if k in os.environ},
    }


@contextlib.contextmanager
def reproducible_cpu(threads: int):
    """Fixed thread count, full-precision fp32 matmuls, the global RNG untouched; everything restored after."""
    old_threads, old_precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(old_threads)
        torch.set_float32_matmul_precision(old_precision)


# ------------------------------------------------------------------------------------------------
# The model: toy_cnn -> global average pool -> linear classifier over the single-object classes
# ------------------------------------------------------------------------------------------------
class Pretraining(nn.Module):
    """The toy CNN with a classifier on its pooled features: images [B, 3, S, S] -> logits [B, classes]."""

    def __init__(self, num_classes: int = len(CLASSES)):
        super().__init__()
        self.backbone = toy_cnn()
        self.head = nn.Linear(backbone_spec("toy_cnn").num_features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, S, S] -> logits [B, classes]."""
        feats = self.backbone(images)                       # [B, 128, S/8, S/8]
        return self.head(feats.mean((2, 3)))                # pooled [B, 128] -> [B, classes]


def _batches(data: SingleObjects, index: np.ndarray | torch.Tensor, recipe: Recipe):
    mean, std = NORMALIZE[recipe.normalize]
    images = torch.from_numpy(data.images)
    labels = torch.from_numpy(data.labels)
    for start in range(0, len(index), recipe.batch_size):
        i = index[start:start + recipe.batch_size]
        yield normalize_batch(images[i], mean, std, recipe.channels_last), labels[i]


@dataclass
class Pretrained:
    """The result of :func:`pretrain`: the backbone's and the classifier's state dicts, the held-out report and
    the seconds it took (images generated and trained, without the evaluation)."""
    backbone: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor]
    report: dict
    seconds: float
    epochs: list[dict]           # per epoch: its number, mean train loss and the backbone's fingerprint after it
    first_steps: dict | None = None   # the same after the first FIRST_STEPS steps (None if the run was shorter)


def fingerprint(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's tensors (names, dtypes, shapes and bytes, in key order): equal iff the bits are."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def pretrain(recipe: Recipe = Recipe(), progress: bool = False, epochs: int | None = None,
             steps: int | None = None) -> Pretrained:
    """Train the toy CNN on ``recipe.n_train`` single objects (fp32, train mode so that BatchNorm's running
    statistics are learned and saved), then measure it on the held-out set.  Deterministic: same recipe, torch
    and CPU kind, same bits.  ``epochs``: stop after that many of the recipe's epochs (the schedule stays the
    recipe's), to check the start of a regeneration against the per-epoch fingerprints of the provenance.
    ``steps``: stop after that many steps of the first epoch, generating only the images they draw and
    measuring nothing (``report`` is empty): the seconds-long check of a regeneration's start."""
    with reproducible_cpu(recipe.threads):
        start = time.perf_counter()
        steps_per_epoch = -(-recipe.n_train // recipe.batch_size)
        if steps is not None and not 1 <= steps <= steps_per_epoch:
            raise ValueError(f"steps must lie in 1..{steps_per_epoch} (the first epoch), got {steps}")
        order = torch.Generator().manual_seed(recipe.seed)
        if steps is None:
            train = single_objects(recipe.n_train, recipe.seed, "train", recipe.image_size)
        else:                                   # the images of the first steps, in the epoch's shuffled order
            first = torch.randperm(recipe.n_train, generator=order)[:steps * recipe.batch_size].numpy()
            train = single_objects(recipe.n_train, recipe.seed, "train", recipe.image_size, indices=first)
        torch.manual_seed(recipe.seed)
        model = Pretraining()
        if recipe.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, epochs=recipe.epochs,
                                                    steps_per_epoch=steps_per_epoch)
        model.train()
        epoch_log, first_steps, step = [], None, 0
        n_epochs = 1 if steps is not None else recipe.epochs if epochs is None else min(epochs, recipe.epochs)
        for epoch in range(n_epochs):
            total, count = 0.0, 0
            index = (torch.randperm(recipe.n_train, generator=order) if steps is None
                     else torch.arange(len(train.labels)))
            for images, labels in _batches(train, index, recipe):
                loss = nn.functional.cross_entropy(model(images), labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total, count, step = total + float(loss.detach()) * len(labels), count + len(labels), step + 1
                if step == FIRST_STEPS:
                    first_steps = {"steps": step, "train_loss": total / count,
                                   "backbone_sha256": fingerprint(model.backbone.state_dict()),
                                   "cpu_kind": cpu_kind(recipe.threads)}
            epoch_log.append({"epoch": epoch + 1, "train_loss": total / count,
                              "backbone_sha256": fingerprint(model.backbone.state_dict())})
            if steps is not None:
                epoch_log[-1]["steps"] = step
            if progress:
                print(f"epoch {epoch + 1}/{recipe.epochs}: train loss {total / count:.4f} "
                      f"({time.perf_counter() - start:.1f} s)", flush=True)
        seconds = time.perf_counter() - start
        backbone = {k: v.detach().clone().contiguous() for k, v in model.backbone.state_dict().items()}
        head = {k: v.detach().clone().contiguous() for k, v in model.head.state_dict().items()}
    report = evaluate(backbone, head, recipe) if steps is None else {}
    return Pretrained(backbone, head, report, seconds, epoch_log, first_steps)


# ------------------------------------------------------------------------------------------------
# Held-out accuracy (anyone can rerun it on the shipped files: evaluate_files)
# ------------------------------------------------------------------------------------------------
def predict(backbone: nn.Module, head: nn.Module, data: SingleObjects, recipe: Recipe) -> np.ndarray:
    """Predicted class per image [N] (eval mode: BatchNorm's running statistics)."""
    backbone.eval()
    head.eval()
    out = []
    with reproducible_cpu(recipe.threads), torch.no_grad():
        for images, _ in _batches(data, np.arange(len(data.labels)), recipe):
            out.append(head(backbone(images).mean((2, 3))).argmax(1))
    return torch.cat(out).numpy()


def accuracy_report(pred: np.ndarray, data: SingleObjects) -> dict:
    """Top-1 accuracy overall and by object size bin, with the share of right colours and right shapes (a
    small object's colour shows where its shape barely does) and the count of images in each bin."""
    bins = data.size_bin()
    colour = np.array([c for c, _ in CLASSES])
    shape = np.array([s for _, s in CLASSES])

    def scores(mask):
        p, t = pred[mask], data.labels[mask]
        return {"n": int(mask.sum()), "accuracy": float(np.mean(p == t)),
                "colour_accuracy": float(np.mean(colour[p] == colour[t])),
                "shape_accuracy": float(np.mean(shape[p] == shape[t]))}
    report = {"overall": scores(np.ones(len(pred), bool)),
              "by_size": {name: dict(scores(bins == k), side=list(SIZE_BINS[name]))
                          for k, name in enumerate(SIZE_BINS)},
              "chance": 1.0 / len(CLASSES)}
    labelled = data.labels < 30                    # the toy world's labels, then the objects in no label set
    report["toy_labels"], report["other_objects"] = scores(labelled), scores(~labelled)
    return report


def evaluate(backbone: dict[str, torch.Tensor] | nn.Module, head: dict[str, torch.Tensor] | nn.Module,
             recipe: Recipe = Recipe()) -> dict:
    """The held-out report (:func:`accuracy_report`) of a backbone (a ``toy_cnn`` module or its state dict) and
    classifier (a linear layer or its state dict) on the recipe's ``n_test`` held-out images."""
    if isinstance(backbone, dict):
        module = toy_cnn()
        module.load_state_dict(backbone)
        backbone = module
    if isinstance(head, dict):
        layer = nn.Linear(head["weight"].shape[1], head["weight"].shape[0])
        layer.load_state_dict(head)
        head = layer
    test = single_objects(recipe.n_test, recipe.seed, "test", recipe.image_size)
    return accuracy_report(predict(backbone, head, test, recipe), test)


def accuracy_table(report: dict):
    """A held-out report (:func:`accuracy_report`, or a provenance's ``held_out``) as a table in %: rows overall
    and each size bin, columns top-1, colour right, shape right, and the number of images."""
    import pandas as pd
    rows = {"all sizes": report["overall"], **report["by_size"]}
    return pd.DataFrame({name: {"top-1 (%)": 100 * r["accuracy"], "colour right (%)": 100 * r["colour_accuracy"],
                                "shape right (%)": 100 * r["shape_accuracy"], "images": r["n"]}
                         for name, r in rows.items()}).T.round(1)


def shipped_provenance(path: str | Path = TOY_CNN_WEIGHTS) -> dict:
    """The provenance beside a backbone file (default: the shipped one)."""
    return json.loads(provenance_path(path).read_text())


def head_path(path: str | Path) -> Path:
    """The classifier file beside a backbone file: ``<stem>.head.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.head.pt")


def provenance_path(path: str | Path) -> Path:
    """The provenance file beside a backbone file: ``<stem>.json``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.json")


def load_head(path: str | Path, backbone_path: str | Path | None = None) -> nn.Linear:
    """The classifier saved beside the backbone: a linear layer from the toy CNN's width to the single-object
    classes.  A file for another width or class count is a ValueError naming it."""
    state = load_torch(path)
    width, classes = backbone_spec("toy_cnn").num_features, len(CLASSES)
    shape = tuple(state["weight"].shape) if isinstance(state, dict) and "weight" in state else None
    if shape != (classes, width) or set(state) != {"weight", "bias"}:
        raise ValueError(f"{path}: not a toy ImageNet classifier: expected the keys weight [{classes}, {width}] and "
                         f"bias [{classes}] ({classes} classes on the toy CNN's {width} features), found "
                         f"{ {k: list(v.shape) for k, v in state.items()} if isinstance(state, dict) else type(state)}")
    layer = nn.Linear(width, classes)
    layer.load_state_dict({k: v.float() for k, v in state.items()})
    return layer


def evaluate_files(path: str | Path = TOY_CNN_WEIGHTS, recipe: Recipe | None = None) -> dict:
    """The held-out report of a saved backbone loaded as a method loads it (``create_backbone("toy_cnn",
    weights=path)``) and its classifier beside it; the recipe (for the held-out set) from the provenance file."""
    if recipe is None:
        recipe = Recipe(**json.loads(provenance_path(path).read_text())["recipe"])
    body = create_backbone("toy_cnn", weights=str(path)).body
    return evaluate(body, load_head(head_path(path)), recipe)


# ------------------------------------------------------------------------------------------------
# Saving with provenance, and the command
# ------------------------------------------------------------------------------------------------
def git_commit() -> str | None:
    """The checkout's commit, with "+dirty" where tracked files changed (None outside git)."""
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save(result: Pretrained, recipe: Recipe, out: str | Path, command: str = COMMAND) -> dict:
    """Write the backbone to ``out``, its classifier to ``<stem>.head.pt`` and the provenance to ``<stem>.json``
    (each atomically); returns the provenance."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, state in ((out, result.backbone), (head_path(out), result.head)):
        atomic_write_stream(path, lambda f, s=state: torch.save(s, f))
    files = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in (out, head_path(out))}
    provenance = {
        "what": "toy_cnn pretrained on the toy ImageNet (mlc.data.toy_imagenet): single objects, "
                f"{len(CLASSES)} classes; the backbone file is the state dict of the toy_cnn Sequential (fp32)",
        "command": command,
        "seed": recipe.seed,
        "recipe": asdict(recipe),
        "commit": git_commit(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "train_seconds": round(result.seconds, 1),
        "cpu_kind": cpu_kind(recipe.threads),
        "held_out": result.report,
        "epochs": result.epochs,
        "first_steps": result.first_steps,
        "files": files,
        "classes": [f"{c} {s}" for c, s in CLASSES],
    }
    atomic_write_json(provenance_path(out), provenance)
    return provenance


def check(path: str | Path = TOY_CNN_WEIGHTS, progress: bool = True) -> dict:
    """Regenerate the weights of ``path`` from the recipe in its provenance and compare: the largest absolute
    difference per tensor, whether the bits are the same, and whether this CPU kind is the one that made them
    (other CPUs sum floats in another order: there the weights differ slightly, the held-out accuracy barely)."""
    path = Path(path)
    provenance = json.loads(provenance_path(path).read_text())
    recipe = Recipe(**provenance["recipe"])
    shipped = load_torch(path)
    result = pretrain(recipe, progress=progress)
    diffs = {k: float((result.backbone[k].double() - shipped[k].double()).abs().max()) if k in shipped
             else float("inf") for k in result.backbone}
    same_kind = cpu_kind(recipe.threads) == provenance["cpu_kind"]
    return {"identical": all(d == 0 for d in diffs.values()) and set(shipped) == set(result.backbone),
            "max_abs_difference": max(diffs.values()), "same_cpu_kind": same_kind,
            "held_out_accuracy": {"shipped": provenance["held_out"]["overall"]["accuracy"],
                                  "regenerated": result.report["overall"]["accuracy"]}}


def record_first_steps(path: str | Path = TOY_CNN_WEIGHTS, progress: bool = True) -> dict:
    """Add the fingerprint after the first ``FIRST_STEPS`` steps, with the CPU kind it was computed on, to the
    provenance of a file made before it was recorded.  The first epoch is regenerated and checked against the
    provenance's epoch 1 as the CI test checks a regeneration: bit for bit on the CPU kind that made the file,
    its mean loss within 1 % on another.  A mismatch is a RuntimeError and nothing is written."""
    path = Path(path)
    provenance = json.loads(provenance_path(path).read_text())
    recipe = Recipe(**provenance["recipe"])
    result = pretrain(recipe, progress=progress, epochs=1)
    [made], [now] = [e for e in provenance["epochs"] if e["epoch"] == 1], result.epochs
    kind = cpu_kind(recipe.threads)
    if kind == provenance["cpu_kind"]:
        agrees, how = now["backbone_sha256"] == made["backbone_sha256"], "bit for bit"
    else:
        agrees, how = abs(now["train_loss"] / made["train_loss"] - 1) <= 0.01, "mean loss within 1 %"
    if not agrees:
        raise RuntimeError(f"{provenance_path(path)}: the regenerated first epoch does not agree with the recorded "
                           f"one ({how}); the recipe or the code changed, so its first steps cannot be recorded")
    provenance["first_steps"] = dict(result.first_steps, cpu_kind=kind, epoch_1_agreed=how)
    atomic_write_json(provenance_path(path), provenance)
    return provenance


def main(argv: list[str] | None = None) -> int:
    """``python -m mlc.runs.toy_backbone``: pretrain the toy CNN and write the weights with their provenance;
    ``--check``: regenerate the shipped weights and compare them with the file."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(TOY_CNN_WEIGHTS),
                        help="the backbone file (default: the shipped one); the classifier and provenance go beside")
    parser.add_argument("--seed", type=int, default=Recipe.seed)
    parser.add_argument("--check", action="store_true",
                        help="regenerate the weights of --out from its provenance's recipe, compare (writes nothing)")
    parser.add_argument("--record-first-steps", action="store_true",
                        help=f"add the fingerprint after the first {FIRST_STEPS} steps to --out's provenance, once "
                             "its first epoch regenerates bit for bit")
    args = parser.parse_args(argv)
    if args.record_first_steps:
        provenance = record_first_steps(args.out)
        print(f"{provenance_path(args.out)}: first {FIRST_STEPS} steps recorded "
              f"({provenance['first_steps']['backbone_sha256'][:12]})")
        return 0
    if args.check:
        if not provenance_path(args.out).is_file():
            print(f"error: {provenance_path(args.out)} not found: --check compares with a file this command wrote",
                  file=sys.stderr)
            return 2
        report = check(args.out)
        print(json.dumps(report, indent=1))
        if report["identical"]:
            print(f"{args.out}: regenerated bit for bit")
            return 0
        print(f"{args.out}: regenerated weights differ (largest difference {report['max_abs_difference']:.3g}); "
              + ("the same CPU kind made them: this is a change of the recipe or the code" if report["same_cpu_kind"]
                 else "another CPU kind or torch made them, which sums floats in another order"))
        return 1 if report["same_cpu_kind"] else 0
    recipe = Recipe(seed=args.seed)
    result = pretrain(recipe, progress=True)
    command = COMMAND + ("" if argv is None and len(sys.argv) <= 1 else " " + shlex.join(
        sys.argv[1:] if argv is None else argv))
    provenance = save(result, recipe, args.out, command)
    r = provenance["held_out"]
    print(f"wrote {args.out} ({result.seconds:.1f} s): held-out accuracy {r['overall']['accuracy']:.3f} "
          + ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in r["by_size"].items())
          + f" (chance {r['chance']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
