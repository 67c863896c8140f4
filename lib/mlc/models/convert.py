"""Renaming official state dicts onto kit modules (shared by the per-method converters)."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ..safe_load import load_torch


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


def read_checkpoint(path: str | Path, trusted: bool = False) -> dict[str, torch.Tensor]:
    """The state dict inside an official checkpoint file (bare, or under 'state_dict' / 'model').

    Read without running code from the file (:func:`mlc.safe_load.load_torch`); ``trusted=True`` (or the
    file listed in ``$MLC_TRUSTED_FILES``) allows full unpickling.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    obj = load_torch(path, trusted=trusted)
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: no state dict found (expected a mapping of names to tensors)")
    return obj
