"""One way to a model: a finished run's best checkpoint, a kit checkpoint file, or the authors' released weights.

``load_model(params_file, method=None, checkpoint=None)`` is what the notebooks, ``python -m mlc.evaluate``,
the predictor and the tests call.  The params build the model (architecture, label names, label embeddings);
the weights come from

* ``checkpoint=None``: the released file the params name (``released.checkpoint``, params/released/), else the
  run's ``<run>/<method>/checkpoints/best.pt``;
* ``checkpoint=PATH``: a kit checkpoint (``best.pt``, or a bare kit state dict) or an official file in the
  container its authors ship (see :func:`mlc.core.registry.official_format`): Q2L ``checkpoint.pkl`` (+
  ``config_new.json``, which must agree with the params), SALGL ``ema_best_model.pth``, SGRE
  ``best_ema_model.pth``, MKT stage-1 / stage-2 files, QKS ``best_model.pth``; with or without ``module.``
  prefixes and ``state_dict`` / ``model`` wrappers.

Every file is read without running code from it (:mod:`mlc.core.safe_load`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from mlc.config.params import RunParams, load_params
from mlc.core.registry import OFFICIAL_FORMATS, create_model, official_format
from mlc.engine.rundir import finished_methods
from mlc.modeling.convert import read_checkpoint, strip_module_prefix
from mlc.runs.build import load_trained
from mlc.runs.data import prepare_data
from mlc.runs.resolve import method_params, no_such_method


@dataclass
class LoadedModel:
    """A model in eval mode and what it is: its method, its label names, and where its weights came from."""
    method: str
    model: torch.nn.Module
    label_names: list[str]
    weights: dict          # {"kind": "trained" | "kit checkpoint" | "released", "checkpoint", "sha256", "format"}


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """The file's SHA-256 (hex), read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict without ``module.`` prefixes, a description of the container) of a checkpoint file."""
    state, container = read_checkpoint(path, with_container=True)
    return strip_module_prefix(state), container


def _load_checked(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, what: str,
                  num_classes: int) -> None:
    """``load_state_dict(strict=True)`` whose errors name the file and, for a shape mismatch, the class count."""
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            hint = ""
            if num_classes in own[key].shape and num_classes not in value.shape:
                hint = f" (the params give {num_classes} labels: is this a checkpoint for another dataset?)"
            raise ValueError(f"{path}: {what}: {key!r} has shape {tuple(value.shape)}, the model's is "
                             f"{tuple(own[key].shape)}{hint}")
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{path}: {what} does not fit the model: missing {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                         f"{' ...' if len(unexpected) > 5 else ''}")
    model.load_state_dict(state, strict=True)


def load_weights(model: torch.nn.Module, model_name: str, path: str | Path, num_classes: int,
                 state: tuple[dict[str, torch.Tensor], str] | None = None) -> dict:
    """Put the weights of ``path`` (a kit or an official file) into ``model``; returns what they were.
    ``state``: the file's (state dict, container) when already read."""
    path = Path(path)
    state, container = state if state is not None else read_state_dict(path)
    own = model.state_dict()
    if set(state) == set(own):                          # the kit's own layout
        _load_checked(model, state, path, "kit checkpoint", num_classes)
        return {"kind": "kit checkpoint", "format": f"kit state dict ({container})"}
    fmt = official_format(model_name)
    try:
        converted = fmt.convert(state, model)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a kit checkpoint of this model and not an official {model_name} checkpoint "
                         f"({fmt.description}): {e.args[0] if e.args else e}") from None
    _load_checked(model, converted, path, f"official {model_name} checkpoint", num_classes)
    return {"kind": "released", "format": f"official {model_name} ({container})"}


def side_file(fmt, path: Path, params: RunParams, released, explicit: bool) -> Path | None:
    """The authors' architecture file to check (Q2L's ``config_new.json``), or None: a checkpoint the caller
    names brings its own (the file beside it), with the params' ``released.config`` as the fallback; the
    params' own release uses ``released.config``, else the file beside its checkpoint."""
    beside = path.parent / fmt.config_file
    fallback = params.resolve_path(released.config) if released is not None and released.config else None
    if explicit:
        return beside if beside.is_file() else fallback if fallback is not None and fallback.is_file() else None
    return fallback if fallback is not None else beside if beside.is_file() else None


def _params(params_file) -> RunParams:
    return params_file if isinstance(params_file, RunParams) else load_params(params_file)


def method_name(params: RunParams, method: str | None = None) -> str:
    """The method whose weights to load: ``method``, else the released one, else the params' only method."""
    if method is None:
        if params.released is not None:
            return params.released.method
        if len(params.methods) != 1:
            raise ValueError(f"{params.source}: several methods ({', '.join(params.methods)}); name one with method=")
        return next(iter(params.methods))
    if method not in params.methods:
        raise KeyError(no_such_method(params, method))
    return method


def methods_to_load(params: RunParams, methods: list[str] | None = None, checkpoint=None,
                    baselines: bool = True) -> list[str]:
    """The methods an evaluation or exploration covers: those named, else the released one (or the one a
    ``checkpoint`` file is for), else every finished run (``baselines=False``: without the baseline runs)."""
    if methods:
        return list(methods)
    if params.released is not None or checkpoint is not None:
        return [method_name(params)]
    return finished_methods(params, baselines=baselines)


def load(params_file, method: str | None = None, checkpoint: str | Path | None = None, device: str = "cpu",
         label_names: list[str] | None = None) -> LoadedModel:
    """:func:`load_model` with what it loaded: label names and the weights' origin (kind, file, SHA-256)."""
    params = _params(params_file)
    name = method_name(params, method)
    mp = method_params(params, name)
    if label_names is None:
        manifest = prepare_data(params, progress=False)
        label_names = [manifest.label_names[i] for i in manifest.label_subset(mp.label_subset)]
    released = params.released if params.released is not None and params.released.method == name else None
    explicit = checkpoint is not None
    if checkpoint is None and released is not None:
        checkpoint = params.resolve_path(released.checkpoint)
        if not Path(checkpoint).is_file():
            how = released.download or f"Download them from {released.url or 'the authors'}"
            raise FileNotFoundError(
                f"{checkpoint}: the released {released.model_name or name} weights are not there ({params.source}, "
                f"released.checkpoint).\n  {how}\n  and save the file as {checkpoint}, or pass checkpoint=PATH / "
                f"--checkpoint PATH.")
    if checkpoint is None:
        model = load_trained(params, name, device="cpu")
        path = params.run_dir / name / "checkpoints" / "best.pt"
        weights = {"kind": "trained", "format": "kit run"}
    else:
        path = Path(checkpoint)
        state = read_state_dict(path)
        fmt, cfg = OFFICIAL_FORMATS.find(mp.model_name), mp.model
        if fmt is not None and fmt.adapt_config is not None:
            try:
                cfg = fmt.adapt_config(state[0], cfg)
            except (KeyError, ValueError) as e:
                raise ValueError(f"{path}: {e.args[0] if e.args else e} ({params.source}, methods.{name}.model)") \
                    from None
        model = create_model(mp.model_name, cfg, len(label_names), label_names=list(label_names))
        if fmt is not None and fmt.config_file and fmt.check_config is not None:
            config_path = side_file(fmt, path, params, released, explicit)
            if config_path is not None:
                fmt.check_config(config_path, mp, len(label_names), params.source)
        weights = load_weights(model, mp.model_name, path, len(label_names), state=state)
    weights.update(checkpoint=str(Path(path).resolve()), sha256=sha256_of(path))
    return LoadedModel(name, model.to(device).eval(), list(label_names), weights)


def load_model(params_file, method: str | None = None, checkpoint: str | Path | None = None,
               device: str = "cpu", label_names: list[str] | None = None) -> torch.nn.Module:
    """The model of a params file in eval mode, with weights from the run, a kit checkpoint or the authors'
    released file (see the module docstring).  ``params_file``: a path or loaded params; ``method``: needed
    when the params have several; ``label_names``: the model's labels without reading the dataset (the
    manifest's by default)."""
    return load(params_file, method, checkpoint, device, label_names).model
