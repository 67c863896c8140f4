"""Run configurations: YAML files read into typed dataclasses and validated.

A params file describes one run: its name and seed, the data, the evaluation settings and, under
``methods``, one entry per method to train (model, loss, inputs, training recipe).  A file may start
from another with ``extends: other.yaml`` (path relative to the file); mappings are merged key by key.

Every mistake is an error naming the file, the line and the dotted key: an unknown or misspelt key
(with a suggestion), a wrong type, a missing required key, a value outside its choices.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mlc.core.registry import BACKBONES, LOSSES, PROMPTS, model_entry
from mlc.core.suggest import did_you_mean
from mlc.data.toyworld import ToyWorldConfig


class ParamsError(ValueError):
    pass


# ------------------------------------------------------------------------------------------------
# Schema
# ------------------------------------------------------------------------------------------------
@dataclass
class DataParams:
    dataset: Literal["toy", "manifest"] = "toy"
    manifest: str | None = None            # manifest directory for real datasets (see docs/manifest.md)
    source: str | None = None              # converter that builds the manifest when it is missing (coco, voc, ...)
    raw_root: str | None = None            # the dataset as downloaded, in its own layout (docs/datasets.md)
    source_options: dict[str, Any] = field(default_factory=dict)   # converter options, e.g. {keep_empty: true}
    root: str | None = None                # where the toy world is generated (default outputs/datasets/toy-<key>)
    toy: ToyWorldConfig = field(default_factory=ToyWorldConfig)
    num_workers: int = 0
    check_images: bool = True              # stat every listed image before training (off for huge sets)
    # speed (neither changes a number; docs/performance.md): images resized once to the training size and
    # stored as uint8 (<manifest>/cache/, N x S x S x 3 bytes), and uint8 batches normalised on the device
    image_cache: Literal["none", "uint8"] = "none"
    uint8_batches: bool = True


@dataclass
class InputParams:
    image_size: int = 64
    normalize: Literal["imagenet", "clip", "none"] = "imagenet"
    hflip: bool = False                    # training only
    cutout_factor: float = 0.0             # training only; 0.5 = ASL's CutoutPIL (see docs/methods/q2l.md)
    randaugment: Literal["none", "official", "torchvision"] = "none"   # training only
    # timm's create_transform with this auto_augment policy instead of the options above (MKT's official
    # pipeline: "rand-m9-mstd0.5-inc1"): RandomResizedCrop + flip + timm RandAugment for training, resize to
    # size / 0.875 + centre crop for evaluation, bicubic
    timm_augment: str | None = None


@dataclass
class LossParams:
    name: str = "asl"                      # a registered loss (mlc.core.registry.LOSSES); QKS's masl / mbce: asl / bce
    #                                        with mask_unknown
    gamma_neg: float = 2.0
    gamma_pos: float = 0.0
    clip: float = 0.0
    eps: float = 1e-5
    detach_focal: bool = True
    reduction: Literal["official", "mean", "sum"] = "official"
    mask_unknown: bool = True


@dataclass
class ParamGroup:
    match: str                              # regular expression on parameter names (re.search)
    lr_scale: float = 1.0
    weight_decay: float | None = None


@dataclass
class TrainParams:
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 1e-2
    # false: parameters of one dimension (biases, norm weights, CLIP's class embedding) are not decayed, as MKT's
    # official optimizer; Q2L, SALGL, SGRE and QKS decay every trainable parameter (their AdamW has one group)
    decay_1d_params: bool = True
    scheduler: Literal["onecycle", "plateau", "cosine", "constant"] = "onecycle"
    pct_start: float = 0.2                 # onecycle warm-up share
    warmup_epochs: float = 0.0             # cosine warm-up
    min_lr: float = 0.0                    # cosine floor
    plateau_factor: float = 0.1
    plateau_patience: int = 2
    param_groups: list[ParamGroup] = field(default_factory=list)   # first match wins; the rest lr_scale 1
    freeze: list[str] = field(default_factory=list)                # regular expressions of frozen parameters
    ema_decay: float | None = 0.9997       # null: no EMA
    # autocast on CUDA; auto: bf16 where the GPU supports it, else fp16 with GradScaler.  On the CPU only bf16
    # autocasts, and only where the CPU has bf16 in hardware (AVX512-BF16, AMX); fp16 and auto run fp32 there
    amp: Literal["auto", "bf16", "fp16", "none"] = "fp16"
    select_on: Literal["val", "test"] = "val"       # "test" = what the official repos do
    early_stop_patience: int | None = None          # epochs without a new best before stopping
    grad_clip_norm: float | None = None
    drop_last: bool = True
    device: str = "auto"
    log_every: int = 50                    # steps between logged losses (and, on a GPU, divergence checks)
    # batch_size is the global batch of one optimizer step: each of `devices` processes loads
    # batch_size / (devices * accumulate_steps) images per forward, and gradients add up over the steps
    accumulate_steps: int = 1
    devices: int = 1                       # processes (GPUs) when a notebook or `mlc train` launches torchrun
    sync_bn: bool = False                  # BatchNorm statistics over all processes (CUDA; SALGL, SGRE train BN)
    # speed switches: none changes the maths (fp32 outputs stay within the oracle tolerances)
    channels_last: bool = False            # NHWC memory format for convolutional backbones
    cudnn_benchmark: bool = True           # autotune convolutions (CUDA; fixed input sizes)
    fused_adamw: bool = True               # the fused AdamW kernel where torch has one for the device
    compile: bool = False                  # torch.compile the training forward


@dataclass
class EvalParams:
    ap_mode: Literal["voc", "noninterp"] = "voc"
    empty_class: Literal["skip", "zero", "nan"] = "skip"
    threshold: float = 0.5
    top_k: int = 3
    zsl_top_k: list[int] = field(default_factory=lambda: [3, 5])   # open vocabulary: P/R/F1@k (Open Images: 10, 20)


@dataclass
class MethodParams:
    model: Any                              # the registered model's config dataclass (chosen by model.name)
    model_name: str
    input: InputParams = field(default_factory=InputParams)
    loss: LossParams = field(default_factory=LossParams)
    train: TrainParams = field(default_factory=TrainParams)
    label_subset: Literal["all", "seen", "objects"] = "all"   # "objects": no tags (the toy world's closed-set methods)
    baseline_for: str | None = None         # this run is the baseline its paper compares that method with


@dataclass
class ClipParams:
    """The vision-language model of the run: OpenAI ViT-B/16 on real data, the toy CLIP in the toy world."""
    model: str = "mlc-toy-clip"             # an open_clip model name (the kit's configs: lib/mlc/clip_configs)
    pretrained: str | None = None           # a local weight file, "openai", or null: train it (toy CLIP only)
    epochs: int = 30                        # toy CLIP pretraining on the toy captions (contrastive)
    batch_size: int = 128
    lr: float = 2.0e-3
    weight_decay: float = 0.1
    warmup_epochs: float = 1.0
    caption_variants: bool = True           # resample each caption's wording every epoch (see mlc.modeling.clip)
    amp: Literal["bf16", "none"] = "none"   # bf16: autocast where the CPU (it trains there) has bf16 hardware
    zero_shot_template: str = "a photo of a {}."


@dataclass
class TextParams:
    """Label-embedding tables the label-embeddings notebook builds into ``<manifest>/embeddings/<encoder>.npy``."""
    # "words", "bert", "bert_plain", "glove", or a registered CLIP prompt set ("clip_qks", "clip_mkt")
    encoders: list[str] = field(default_factory=list)
    bert_model: str = "bert-base-uncased"   # a Hugging Face name (local cache) or a local directory
    glove_path: str | None = None           # glove.840B.300d.txt
    words_dim: int = 64


@dataclass
class LogParams:
    """Logs beside history.jsonl (see mlc.engine.logs); none of them changes a result."""
    tensorboard: bool = True                # TensorBoard scalars in <run>/<method>/tensorboard/
    wandb: bool = False                     # Weights & Biases (needs `pip install wandb`)
    wandb_project: str | None = None


@dataclass
class ReleasedParams:
    """The authors' released weights for one method of the params (params/released/): where the user puts the
    file, where it is published, and the number the paper (or model zoo) gives for it."""
    method: str                             # the method under `methods` these weights are for
    checkpoint: str                         # the official file (relative paths: against the kit checkout)
    model_name: str = ""                    # the authors' name for it, e.g. Q2L-R101-448
    config: str | None = None               # Q2L: the config_new.json shipped beside checkpoint.pkl
    url: str = ""                           # where the authors publish it
    download: str = ""                      # how to get it (the authors host on cloud drives: by hand)
    paper_metric: str = "mAP"               # a column of the report: mAP, ZSL mAP, ...
    paper_value: float | None = None        # null: no published number was found
    paper_source: str = ""


@dataclass
class RunParams:
    name: str
    seed: int = 0
    description: str = ""
    output_root: str = "outputs"
    data: DataParams = field(default_factory=DataParams)
    eval: EvalParams = field(default_factory=EvalParams)
    clip: ClipParams | None = None          # the run's CLIP (toy CLIP or OpenAI ViT-B/16); none by default
    text: TextParams = field(default_factory=TextParams)
    log: LogParams = field(default_factory=LogParams)
    methods: dict[str, MethodParams] = field(default_factory=dict)
    released: ReleasedParams | None = None  # released official weights to evaluate (params/released/)
    source: str = ""                        # the file it was read from (filled in by load_params)
    base_dir: str = ""                      # what relative paths resolve against (filled in by load_params)

    def resolve_path(self, path: str | Path) -> Path:
        """A path of the params as a usable path: relative ones resolve against :attr:`base_dir` (the kit
        checkout that holds the params file, else the file's folder), never against the current folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() or not self.base_dir else Path(self.base_dir) / p

    @property
    def run_dir(self) -> Path:
        """``<output_root>/<name>``, resolved against :attr:`base_dir`."""
        return self.resolve_path(self.output_root) / self.name

    def dataset_root(self) -> Path:
        """Where the run's manifest lives (the generated toy world, or ``data.manifest``)."""
        if self.data.dataset == "toy":
            return self.resolve_path(self.data.root) if self.data.root else \
                self.resolve_path(self.output_root) / "datasets" / f"toy-{self.data.toy.key()}"
        return self.resolve_path(self.data.manifest)


# Ranges checked when a file is loaded, before anything is written: (test, what the value must be).
def _at_least(lo):
    return (lambda v: v >= lo, f">= {lo}")


def _positive():
    return (lambda v: v > 0, "> 0")


def _open_unit():
    return (lambda v: 0 < v < 1, "between 0 and 1 (exclusive)")


def _unit():
    return (lambda v: 0 <= v <= 1, "between 0 and 1")


def _weights():
    return (lambda v: len(v) > 0 and all(w >= 0 for w in v) and sum(v) > 0,
            "a non-empty list of weights >= 0 that do not all vanish")


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def _regexes():
    return (lambda v: all(_compiles(x) for x in ([v] if isinstance(v, str) else v)),
            "valid regular expressions (Python's re)")


def _device():
    return (lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None, "auto, cpu, cuda, cuda:N or mps")


_LIMITS: dict[type, dict[str, tuple]] = {
    TrainParams: {"epochs": _at_least(1), "batch_size": _at_least(1), "eval_batch_size": _at_least(1),
                  "lr": _positive(), "weight_decay": _at_least(0), "pct_start": _open_unit(),
                  "warmup_epochs": _at_least(0), "min_lr": _at_least(0), "plateau_factor": _open_unit(),
                  "plateau_patience": _at_least(0), "ema_decay": _open_unit(), "early_stop_patience": _at_least(1),
                  "grad_clip_norm": _positive(), "log_every": _at_least(1),
                  "accumulate_steps": _at_least(1), "devices": _at_least(1), "freeze": _regexes(),
                  "device": _device()},
    RunParams: {"seed": _at_least(0)},
    ToyWorldConfig: {"seed": _at_least(0), "n_train": _at_least(1), "n_val": _at_least(0), "n_test": _at_least(1),
                     "image_size": _at_least(8), "unseen_fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
                     "supersample": _at_least(1), "pairs_per_scene": _at_least(0), "pair_probability": _unit(),
                     "atypical_weight": _at_least(0), "labels_per_image_weights": _weights(),
                     "extra_instance_probability": (lambda v: 0 <= v < 1, "in [0, 1)"),
                     "distractors_mean": _at_least(0), "popularity_exponent": _at_least(0),
                     "size_bins": (lambda v: len(v) > 0 and all(len(b) == 2 and 0 < b[0] < b[1] <= 1 for b in v),
                                   "a non-empty list of [low, high] side fractions with 0 < low < high <= 1"),
                     "size_weights": _weights(),
                     "mention_probability": (lambda v: len(v) > 0 and all(0 <= p <= 1 for p in v),
                                             "a non-empty list of probabilities in [0, 1]")},
    DataParams: {"num_workers": _at_least(0)},
    InputParams: {"image_size": _at_least(1), "cutout_factor": _unit()},
    LossParams: {"gamma_neg": _at_least(0), "gamma_pos": _at_least(0), "clip": _unit(), "eps": _at_least(0)},
    ParamGroup: {"lr_scale": _at_least(0), "match": _regexes()},
    EvalParams: {"threshold": _unit(), "top_k": _at_least(1),
                 "zsl_top_k": (lambda v: len(v) > 0 and all(k >= 1 for k in v), "a non-empty list of integers >= 1")},
    ClipParams: {"epochs": _at_least(0), "batch_size": _at_least(1), "lr": _positive(), "weight_decay": _at_least(0),
                 "warmup_epochs": _at_least(0)},
    TextParams: {"words_dim": _at_least(1)},
}


# A value of a path field with one of these suffixes, or with a folder in it, names a file; any other value is
# a keyword of the field ("random", "words", "run", "openai", ...).
PATH_SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".tar", ".pkl", ".bin", ".safetensors", ".ckpt", ".h5", ".json")


def path_field(default: str | None = None):
    """A model-config field that may name a file (weights, a label-embedding table, a cache folder): a relative
    path in it resolves against the params' checkout, never the current folder (:mod:`mlc.runs.resolve`)."""
    return field(default=default, metadata={"path": True})


def names_a_file(value) -> bool:
    """Whether the value of a path field is a path (not a keyword such as ``random`` or ``run:<method>``)."""
    if not isinstance(value, str) or value.startswith("run:"):
        return False
    return "/" in value or "\\" in value or value.lower().endswith(PATH_SUFFIXES) or value.startswith("~")


GENERIC_TEXT_ENCODERS = ("words", "bert", "bert_plain", "glove")


def text_encoder_names() -> list[str]:
    """The label-embedding encoders ``text.encoders`` accepts: the generic ones and every registered prompt set."""
    return list(GENERIC_TEXT_ENCODERS) + PROMPTS.names()


def _loss_names() -> list[str]:
    return LOSSES.names()


def check_run_name(name: str) -> str | None:
    """Why ``name`` cannot name a run folder under the output root (None when it can)."""
    if not name or not name.strip():
        return "must not be empty"
    p = Path(name)
    if p.is_absolute() or name.startswith(("/", "\\")) or ":" in p.parts[0]:
        return "must be a relative name (the run folder is <output_root>/<name>)"
    if len(name.encode()) > 200:
        return f"must be at most 200 bytes long (it is {len(name.encode())}; it names a folder and its files)"
    if any(part in ("..", ".") for part in Path(name.replace("\\", "/")).parts) or name.startswith("."):
        return "must not contain '..' or '.' parts nor start with '.' (the run would land outside the output root)"
    return None


# ------------------------------------------------------------------------------------------------
# YAML with line numbers
# ------------------------------------------------------------------------------------------------
# A params file has a few hundred values; aliases (*name) may repeat a mapping, but a file whose aliases expand
# it past this many values (nested aliases grow it tenfold a level: 498 bytes took 37 s and 3.5 GB) is refused.
MAX_EXPANDED_VALUES = 100_000


def _check_alias_expansion(node, file: str) -> None:
    """Refuse a YAML document whose aliases expand it past :data:`MAX_EXPANDED_VALUES`, or refer to themselves,
    before anything walks it."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(n) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ParamsError(f"{file}:{n.start_mark.line + 1}: an alias refers to the value that contains it "
                              f"(a recursive &anchor / *alias); a params file cannot hold itself")
        open_nodes.add(key)
        if isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in n.value)
        else:
            total = 1
        open_nodes.discard(key)
        sizes[key] = total
        if total > MAX_EXPANDED_VALUES:
            raise ParamsError(f"{file}: its aliases (*name) expand it to more than {MAX_EXPANDED_VALUES:,} values "
                              f"(nested aliases repeat each other); a params file holds a few hundred: write the "
                              f"values out or nest fewer aliases")
        return total

    size(node)


def _compose_with_lines(text: str, file: str) -> tuple[Any, dict[str, tuple[str, int]]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ParamsError(f"{file}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if node is not None:
        _check_alias_expansion(node, file)
    lines: dict[str, tuple[str, int]] = {}

    def walk(n, path):
        if isinstance(n, yaml.MappingNode):
            first_line: dict = {}
            for k, v in n.value:
                if not isinstance(k, yaml.ScalarNode):
                    raise ParamsError(f"{file}:{k.start_mark.line + 1}: a key must be a plain name, not a "
                                      f"{'list' if isinstance(k, yaml.SequenceNode) else 'mapping'}")
                p = f"{path}.{k.value}" if path else str(k.value)
                if k.value in first_line:       # YAML would silently keep the last one
                    raise ParamsError(f"{file}:{k.start_mark.line + 1}: duplicate key {p!r} (first set on line "
                                      f"{first_line[k.value]}); keep one")
                first_line[k.value] = k.start_mark.line + 1
                lines[p] = (file, k.start_mark.line + 1)
                walk(v, p)
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                lines[f"{path}[{i}]"] = (file, v.start_mark.line + 1)
                walk(v, f"{path}[{i}]")

    if node is not None:
        walk(node, "")
    try:
        return yaml.safe_load(text), lines
    except yaml.YAMLError as e:              # e.g. a !!python/object tag, which safe_load refuses
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ParamsError(f"{file}{where}: not allowed in a params file ({getattr(e, 'problem', None) or e})") from None


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read(path: Path, seen: tuple = (), extended_from: str | None = None, chain: list | None = None
          ) -> tuple[dict, dict]:
    """(the file's values merged over those of the files it extends, {dotted key: (file, line)} of each value);
    ``chain`` (if given) gets the file and each file it extends, in that order."""
    if not path.is_file():
        raise ParamsError(f"{extended_from}: extends {path}, which is not found" if extended_from
                          else f"{path}: params file not found")
    if path.resolve() in seen:
        raise ParamsError(f"{path}: 'extends' forms a cycle")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ParamsError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8") \
            from None
    data, lines = _compose_with_lines(text, str(path))
    if chain is not None:
        chain.append(str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}:1: a params file must be a mapping of keys to values")
    base_name = data.pop("extends", None)
    if base_name is None:
        return data, lines
    if not isinstance(base_name, str):
        raise ParamsError(f"{path}:{lines['extends'][1]}: 'extends' must be a file name")
    base_name = str(_expand_env(base_name, "extends", _Converter(lines, str(path))))   # a path, whatever its text
    base, base_lines = _read(path.parent / base_name, seen + (path.resolve(),),
                             extended_from=f"{path}:{lines['extends'][1]}", chain=chain)
    merged = _deep_merge(base, data)
    # converter options belong to their converter: a file that names another data source starts from none
    # (COCO's keep_empty must not reach the NUS-WIDE converter), and gives its own whole
    mine, theirs = data.get("data") or {}, base.get("data") or {}
    if isinstance(mine, dict) and isinstance(theirs, dict) and "source" in mine and \
            mine.get("source") != theirs.get("source"):
        merged["data"]["source_options"] = dict(mine.get("source_options") or {})
        base_lines = {k: v for k, v in base_lines.items() if not _under(k, "data.source_options")}
        if "data.source" in lines:              # emptied (or replaced) because this file names another source
            base_lines["data.source_options"] = lines["data.source"]
    return merged, {**base_lines, **lines}


def _under(key: str, prefix: str) -> bool:
    """Whether dotted ``key`` is ``prefix`` or a key (or list item) inside it."""
    return key == prefix or key.startswith((prefix + ".", prefix + "["))


# ------------------------------------------------------------------------------------------------
# Typed conversion
# ------------------------------------------------------------------------------------------------
class _Converter:
    def __init__(self, lines: dict, default_file: str):
        self.lines, self.default_file = lines, default_file

    def where(self, path: str) -> str:
        p = path
        while p:
            if p in self.lines:
                f, line = self.lines[p]
                return f"{f}:{line}" if isinstance(line, int) else f"{f} ({line})"
            p = p.rsplit(".", 1)[0] if "." in p else ""
        return self.default_file

    def fail(self, path: str, msg: str):
        raise ParamsError(f"{self.where(path)}: {path}: {msg}")

    def convert(self, value, tp, path: str):
        if isinstance(value, _EnvText):
            return self.env_text(value, tp, path)
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if tp is Any:
            return value
        if origin in (typing.Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            non_none = [a for a in args if a is not type(None)]
            errors = []
            for a in non_none:
                try:
                    return self.convert(value, a, path)
                except ParamsError as e:
                    errors.append(str(e))
            raise ParamsError(errors[0])
        if value is None:
            self.fail(path, f"must not be empty (expected {self.type_name(tp)})")
        if origin is Literal:
            if value not in args:
                hint = did_you_mean(value, args)
                self.fail(path, f"{value!r} is not one of {', '.join(map(repr, args))}{hint}")
            return value
        if dataclasses.is_dataclass(tp):
            return self.dataclass(value, tp, path)
        if origin is list:
            if not isinstance(value, list):
                self.fail(path, f"expected a list, got {type(value).__name__} {value!r}")
            return [self.convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
        if origin is tuple:
            if not isinstance(value, (list, tuple)):
                self.fail(path, f"expected a list, got {type(value).__name__} {value!r}")
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(self.convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
            if len(value) != len(args):
                self.fail(path, f"expected {len(args)} values, got {len(value)}")
            return tuple(self.convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        if origin is dict:
            if not isinstance(value, dict):
                self.fail(path, f"expected a mapping, got {type(value).__name__}")
            return {k: self.convert(v, args[1], f"{path}.{k}") for k, v in value.items()}
        if tp is bool:
            if not isinstance(value, bool):
                self.fail(path, f"expected true or false, got {value!r}")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail(path, f"expected an integer, got {value!r}")
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                # YAML reads 1e-4 (no dot) as a string; accept numeric strings
                if isinstance(value, str):
                    try:
                        value = float(value)
                    except ValueError:
                        self.fail(path, f"expected a number, got {value!r}")
                else:
                    self.fail(path, f"expected a number, got {value!r}")
            if not math.isfinite(float(value)):
                self.fail(path, f"must be a finite number, got {value!r}")
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                self.fail(path, f"expected a string, got {value!r}")
            return value
        raise TypeError(f"unsupported params type {tp} at {path}")

    def env_text(self, value: "_EnvText", tp, path: str):
        """A value that was one ``${env:NAME}``, converted by the type of its key: a number or boolean field (or
        a free-form one, ``Any``) reads the text as YAML would (``seed: ${env:SEED}`` with SEED=3 is 3), an
        optional field takes an empty or ``null`` text as None, and every other field keeps the text as it is
        (``name: ${env:RUN}`` with RUN=2024 is the string '2024')."""
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            if type(None) in args and _yaml_scalar(value) is None:
                return None
            errors = []
            for a in (a for a in args if a is not type(None)):
                try:
                    return self.env_text(value, a, path)
                except ParamsError as e:
                    errors.append(str(e))
            raise ParamsError(errors[0])
        if tp is Any:
            parsed = _yaml_scalar(value)
            return parsed if parsed is None or isinstance(parsed, (bool, int, float)) else str(value)
        if tp in (bool, int, float):
            parsed = _yaml_scalar(value)
            try:
                return self.convert(parsed if isinstance(parsed, (bool, int, float)) else str(value), tp, path)
            except ParamsError as e:
                raise ParamsError(f"{e} (from {value.ref})") from None
        return self.convert(str(value), tp, path)

    @staticmethod
    def type_name(tp) -> str:
        return getattr(tp, "__name__", str(tp))

    def dataclass(self, value, cls, path: str):
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping of keys, got {value!r}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        for key in value:
            if key not in names:
                hint = did_you_mean(key, names)
                self.fail(f"{path}.{key}" if path else str(key), f"unknown key {key!r}{hint}; "
                          f"allowed here: {', '.join(names)}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            sub = f"{path}.{f.name}" if path else f.name
            if f.name in value:
                kwargs[f.name] = self.convert(value[f.name], hints[f.name], sub)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.fail(sub, "required key is missing")
        if cls is LossParams and kwargs.get("name", "asl") not in _loss_names():
            self.fail(f"{path}.name", f"unknown loss {kwargs['name']!r}{did_you_mean(kwargs['name'], _loss_names())}; "
                      f"choose one of {', '.join(map(repr, _loss_names()))}")
        if cls is TextParams:
            for i, kind in enumerate(kwargs.get("encoders", [])):
                if kind not in text_encoder_names():
                    self.fail(f"{path}.encoders[{i}]", f"unknown encoder {kind!r}"
                              f"{did_you_mean(kind, text_encoder_names())}; "
                              f"choose one of {', '.join(map(repr, text_encoder_names()))}")
        for key, (ok, what) in _LIMITS.get(cls, {}).items():
            v = kwargs.get(key)
            if v is not None and not ok(v):
                self.fail(f"{path}.{key}" if path else key, f"must be {what}, got {v!r}")
        try:
            return cls(**kwargs)
        except ValueError as e:               # a check across fields, made by the dataclass itself
            self.fail(path or cls.__name__, str(e))

    def method(self, value, path: str) -> MethodParams:
        if not isinstance(value, dict):
            self.fail(path, "expected a mapping with 'model', 'loss', 'train', 'input'")
        model = value.get("model")
        if not isinstance(model, dict) or "name" not in model:
            self.fail(f"{path}.model", "required mapping with a 'name' key (the registered model)")
        model = dict(model)
        name = model.pop("name")
        try:
            entry = model_entry(name)
        except KeyError as e:
            self.fail(f"{path}.model.name", e.args[0])
        rest = {k: v for k, v in value.items() if k != "model"}
        mp = self.dataclass({**rest, "model": None, "model_name": name}, MethodParams, path)
        mp.model = self.dataclass(model, entry.config_class, f"{path}.model")
        backbone = getattr(mp.model, "backbone", None)
        if isinstance(backbone, str):
            try:
                BACKBONES.get(backbone)
            except KeyError as e:
                self.fail(f"{path}.model.backbone", e.args[0])
        return mp


OUTPUT_ROOT_ENV = "MLC_OUTPUT_ROOT"
_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def parse_set_args(args: list[str]) -> tuple[dict, dict]:
    """``["methods.q2l.train.lr=1e-4", ...]`` -> (nested overrides, {dotted key: ("command line", arg)}).
    Values are read as YAML (``1e-4``, ``true``, ``[1, 2]``, ``{a: 1}``)."""
    overrides: dict = {}
    lines: dict = {}
    for arg in args:
        key, sep, raw = arg.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ParamsError(f"command line (--set {arg}): expected KEY=VALUE with a dotted key, e.g. "
                              f"methods.q2l.train.lr=1e-4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ParamsError(f"command line (--set {arg}): the value is not valid YAML ({e})") from None
        node = overrides
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParamsError(f"command line (--set {arg}): {part!r} is set to a value and also has keys")
        node[parts[-1]] = value
        for i in range(1, len(parts)):
            lines[".".join(parts[:i])] = ("command line", f"--set {arg}")
        _record(lines, key, value, ("command line", f"--set {arg}"))
    return overrides, lines


def _record(lines: dict, key: str, value, origin: tuple) -> None:
    """``lines[key] = origin``, and the same for every key inside a mapping ``value`` (``--set data.toy={n_train:
    10}`` sets data.toy.n_train, and leaves the other keys of data.toy where they came from)."""
    lines[key] = origin
    if isinstance(value, dict):
        for k, v in value.items():
            _record(lines, f"{key}.{k}", v, origin)


class _EnvText(str):
    """The text of a value that is one ``${env:NAME}`` reference: its key's type decides what it becomes
    (:meth:`_Converter.env_text`).  ``ref`` is the reference as the file wrote it."""
    ref: str = ""


def _yaml_scalar(text: str):
    """What YAML reads ``text`` as (``3`` -> 3, ``true`` -> True, ``""`` -> None), or the text when it is not
    valid YAML."""
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def _expand_env(value, path: str, conv: "_Converter", refs: dict | None = None):
    """Replace ``${env:NAME}`` (or ``${env:NAME:-default}``) in every string of the params.  A value that is one
    reference becomes an :class:`_EnvText`, converted later by the type of its key; ``refs`` (if given) gets
    ``{dotted key: ["$NAME" or "${env:NAME:-default} (NAME unset)", ...]}`` for each expanded value."""
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{path}.{k}" if path else str(k), conv, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{path}[{i}]", conv, refs) for i, v in enumerate(value)]
    if isinstance(value, str) and "${env:" in value:
        used = []

        def sub(m):
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                used.append(f"${name}")
                return os.environ[name]
            if default is not None:
                used.append(f"{m.group(0)} ({name} unset)")
                return default
            conv.fail(path, f"environment variable {name} is not set (used as ${{env:{name}}}; "
                            f"${{env:{name}:-default}} gives a default)")
        expanded = _ENV_REF.sub(sub, value)
        if refs is not None and used:
            refs[path] = used
        if _ENV_REF.fullmatch(value.strip()):
            # the whole value is one variable: the key's type decides (``seed: ${env:SEED}`` with SEED=3 is the
            # integer 3, as ``seed: 3`` would be; ``name: ${env:RUN}`` with RUN=2024 is the string '2024')
            text = _EnvText(expanded)
            text.ref = value.strip()
            return text
        return expanded
    return value


LAUNCH_BASE_DIR_ENV = "MLC_LAUNCH_BASE_DIR"


def find_checkout(start: Path) -> Path | None:
    """The kit checkout at or above ``start`` (the folder with pyproject.toml and notebooks/), or None."""
    here = start.resolve()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").is_file() and (p / "notebooks").is_dir():
            return p
    return None


def base_dir_of(params_file: Path) -> Path:
    """The kit checkout that holds a params file, else the file's own folder: relative paths in the params
    resolve against it (unless the params declare their own ``base_dir``)."""
    here = params_file.resolve().parent
    return find_checkout(here) or here


@dataclass
class Provenance:
    """Where each value of loaded params came from (:func:`load_params_with_provenance`)."""
    files: list[str]                        # the params file, then each file it extends, in that order
    origins: dict[str, str]                 # dotted key -> "file:line", "command line (--set k=v)", ...

    def of(self, key: str) -> str:
        """Where the value at dotted ``key`` (``methods.q2l.train.lr``) came from: ``file:line``, ``command line
        (--set ...)``, ``$MLC_OUTPUT_ROOT`` ..., followed by the environment variables it was expanded from;
        ``default`` when nothing set it (the dataclass default)."""
        return self.origins.get(key, "default")


def load_params(path: str | Path, overrides: dict | None = None, set_args: list[str] | None = None,
                output_root: str | None = None) -> RunParams:
    """Read, merge (``extends``), override and validate a params file.

    ``overrides``: a nested dict merged over the file; ``set_args``: command-line ``KEY=VALUE`` overrides
    (errors name the command line); ``${env:NAME}`` in any string is replaced by the environment variable.
    The output root is ``output_root``, else ``$MLC_OUTPUT_ROOT``, else the file's ``output_root``.
    """
    return load_params_with_provenance(path, overrides, set_args, output_root)[0]


def load_params_with_provenance(path: str | Path, overrides: dict | None = None, set_args: list[str] | None = None,
                                output_root: str | None = None) -> tuple[RunParams, Provenance]:
    """:func:`load_params`, and where each value came from (what ``mlc config`` prints): the file and line that
    set it (the params file or a file it ``extends``), ``--set``, ``overrides``, ``--output-root`` or
    ``$MLC_OUTPUT_ROOT``, and the ``${env:NAME}`` references it was expanded from."""
    path = Path(path)
    chain: list[str] = []
    data, lines = _read(path, chain=chain)
    if overrides:
        data = _deep_merge(data, overrides)
        lines = dict(lines)
        for key, value in overrides.items():
            _record(lines, str(key), value, ("overrides", "load_params(overrides=...)"))
    if set_args:
        cli, cli_lines = parse_set_args(set_args)
        data = _deep_merge(data, cli)
        lines = {**lines, **cli_lines}
    conv = _Converter(lines, str(path))
    refs: dict[str, list[str]] = {}
    data = _expand_env(data, "", conv, refs)
    methods_raw = data.pop("methods", {}) or {}
    if not isinstance(methods_raw, dict):
        conv.fail("methods", "expected a mapping of method name to its settings")
    data.pop("source", None)
    declared_base = data.pop("base_dir", None)     # run_all's params_overrides.yaml names the base of what it extends
    if declared_base is not None and not isinstance(declared_base, str):
        conv.fail("base_dir", f"expected a folder, got {declared_base!r}")
    params = conv.dataclass(data, RunParams, "")
    params.methods = {name: conv.method(m, f"methods.{name}") for name, m in methods_raw.items()}
    params.source = str(path)
    # a launcher that hands resolved params to a subprocess (mlc.runs.torchrun) keeps their original base
    params.base_dir = os.environ.get(LAUNCH_BASE_DIR_ENV) or (
        str(path.resolve().parent / Path(declared_base).expanduser()) if declared_base else str(base_dir_of(path)))
    if output_root or os.environ.get(OUTPUT_ROOT_ENV):
        params.output_root = output_root or os.environ[OUTPUT_ROOT_ENV]
        lines = {**lines, "output_root": ("command line", "--output-root") if output_root else
                 (f"${OUTPUT_ROOT_ENV}", "environment")}
        refs.pop("output_root", None)
    bad_name = check_run_name(params.name)
    if bad_name:
        conv.fail("name", f"{params.name!r} {bad_name}")
    if params.data.dataset == "manifest" and not params.data.manifest:
        conv.fail("data.manifest", "required when data.dataset is 'manifest'")
    for name, mp in params.methods.items():
        if mp.baseline_for is not None and mp.baseline_for not in params.methods:
            conv.fail(f"methods.{name}.baseline_for", f"{mp.baseline_for!r} is not a method of these params "
                                                      f"(has {', '.join(params.methods)})")
    if params.released is not None and params.released.method not in params.methods:
        conv.fail("released.method", f"{params.released.method!r} is not a method of these params "
                                     f"(has {', '.join(params.methods) or 'none'})")
    return params, _provenance(chain, lines, refs)


def _provenance(chain: list[str], lines: dict, refs: dict[str, list[str]]) -> Provenance:
    """The origins of :class:`Provenance` from the loader's ``{key: (file, line)}`` and environment references
    (a reference inside a list item or a mapping counts for the key that holds it)."""
    origins = {}
    for key, (where, line) in lines.items():
        origins[key] = f"{where}:{line}" if isinstance(line, int) else \
            where if line == "environment" else f"{where} ({line})"
    for key, used in refs.items():
        for k in dict.fromkeys([key, key.split("[", 1)[0]]):      # the list that holds an item is printed whole
            origins[k] = f"{origins[k]}, {', '.join(used)}" if k in origins else ", ".join(used)
    return Provenance(list(chain), origins)


def params_to_dict(params: RunParams) -> dict:
    """Plain, YAML-safe dict of resolved params (what a run directory stores)."""
    def plain(x):
        if dataclasses.is_dataclass(x):
            return {f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    out = plain(params)
    for name, m in out["methods"].items():
        m["model"] = {"name": m.pop("model_name"), **m["model"]}
    out.pop("source")
    out.pop("base_dir")
    return out
