"""Model registry (timm-style): ``@register_model(name, ConfigClass)`` and one ``create_model``."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from torch import nn

_MODELS: dict[str, "ModelEntry"] = {}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]
    config_class: type


def register_model(name: str, config_class: type):
    """Register ``build(cfg, num_classes) -> nn.Module`` with the dataclass its params are read into."""
    def deco(fn):
        if name in _MODELS:
            raise KeyError(f"model {name!r} registered twice")
        _MODELS[name] = ModelEntry(name, fn, config_class)
        return fn
    return deco


def model_entry(name: str) -> ModelEntry:
    from . import q2l  # noqa: F401  (registers the built-in models)
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise KeyError(f"unknown model {name!r}{hint}; known: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def list_models() -> list[str]:
    from . import q2l  # noqa: F401
    return sorted(_MODELS)


def create_model(name: str, cfg=None, num_classes: int = 80) -> nn.Module:
    entry = model_entry(name)
    return entry.build(cfg if cfg is not None else entry.config_class(), num_classes)
