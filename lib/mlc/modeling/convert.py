"""Renaming official state dicts onto kit modules (shared by the per-method converters)."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from mlc.core.safe_load import load_torch


def strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that DDP and the official ModelEma wrappers add."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def rename_state_dict(state: dict[str, torch.Tensor], rules: list[tuple[str, str]], drop: tuple[str, ...] = (),
                      method: str = "official") -> dict[str, torch.Tensor]:
    """Apply the first matching (regex, replacement) rule to every key; keys in ``drop`` are removed.

    A key that no rule matches is an error naming it, so a checkpoint of another method or layout
    fails loudly instead of loading half its weights.
    """
    out = {}
    for key, value in strip_module_prefix(state).items():
        if key in drop:
            continue
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            raise KeyError(f"{method} key {key!r} has no kit equivalent")
    return out


def unwrap_state_dict(obj, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, which container) of what a checkpoint file holds: a bare state dict, or one under
    'state_dict' / 'model' / 'state_dict_ema' / 'module' (nested wrappers too)."""
    wrappers = []
    while isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "state_dict_ema", "module"):
            if isinstance(obj.get(key), dict):
                wrappers.append(key)
                obj = obj[key]
                break
        else:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            raise ValueError(f"{path}: no state dict found: the file holds keys {sorted(obj)[:8]} "
                             f"({len(tensors)} of them tensors); expected a mapping of parameter names to tensors "
                             f"or one under 'state_dict' / 'model'")
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: no state dict found (the file holds a {type(obj).__name__})")
    prefixed = all(k.startswith("module.") for k in obj)
    container = "".join(f"[{w!r}]" for w in wrappers) or "bare state dict"
    return obj, container + (", 'module.' prefixed" if prefixed else "")


def read_checkpoint(path: str | Path, trusted: bool = False, with_container: bool = False):
    """The state dict inside a checkpoint file (bare, or under 'state_dict' / 'model' / ...); with
    ``with_container`` also a description of the container (``(state, "['state_dict'], 'module.' prefixed")``).

    Read without running code from the file (:func:`mlc.core.safe_load.load_torch`); ``trusted=True`` (or the
    file listed in ``$MLC_TRUSTED_FILES``) allows full unpickling.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state, container = unwrap_state_dict(load_torch(path, map_location="cpu", trusted=trusted), path)
    return (state, container) if with_container else state


# the ImageNet classifiers an official backbone may keep although the method never calls them (SGRE's vendored
# timm ViT keeps its 1000-class ``head``); dropped when the kit's backbone has none
_UNUSED_BACKBONE_HEADS = ("head.", "head_dist.")


def official_backbone_keys(state: dict[str, torch.Tensor], model: torch.nn.Module,
                           prefix: str = "backbone.body.") -> dict[str, torch.Tensor]:
    """The backbone keys of an official state dict (already renamed to ``prefix``) in the layout of the kit's
    backbone ``model.backbone.body``: for timm backbones through the ``checkpoint_filter_fn`` timm itself uses
    for the authors' layouts (ASL's TResNet with InPlaceABN -> BatchNorm weights, Microsoft's Swin with its
    end-of-stage downsampling, non-persistent buffers dropped), for CvT through the body's
    ``official_key_filter`` (Microsoft's layout).  A classifier head the kit's backbone does not have is
    dropped, and BatchNorm's ``num_batches_tracked`` (absent from InPlaceABN and frozen BN) is filled with 0."""
    import sys
    body = getattr(getattr(model, "backbone", None), "body", None)
    if body is None:
        return state
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    rest = {k: v for k, v in state.items() if not k.startswith(prefix)}
    own = body.state_dict()
    sub = {k: v for k, v in sub.items() if k in own or not k.startswith(_UNUSED_BACKBONE_HEADS)}
    filter_fn = getattr(body, "official_key_filter", None)           # CvT: Microsoft's layout
    if filter_fn is None and type(body).__module__.startswith("timm."):
        filter_fn = getattr(sys.modules[type(body).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        sub = filter_fn(sub, body)
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in sub:
            sub[key] = torch.zeros_like(value, device="cpu")
    return {**rest, **{prefix + k: v for k, v in sub.items()}}
