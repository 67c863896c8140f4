"""Model registry (timm-style): ``@register_model(name, ConfigClass)`` and one ``create_model``.

The registry imports no model: ``mlc/models/__init__.py`` imports every model module, which registers
itself here, so importing anything under ``mlc.models`` fills the registry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..suggest import did_you_mean

_MODELS: dict[str, "ModelEntry"] = {}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]
    config_class: type


def register_model(name: str, config_class: type):
    """Register ``build(cfg, num_classes, label_names=None) -> nn.Module`` with its params dataclass."""
    def deco(fn):
        if name in _MODELS:
            raise KeyError(f"model {name!r} registered twice")
        _MODELS[name] = ModelEntry(name, fn, config_class)
        return fn
    return deco


_METHODS: dict[str, Callable] = {}


def register_method(name: str):
    """Register how model ``name`` trains: ``fn(model, loss_params) -> mlc.engine.Method``.

    Models without one train as plain closed-set classifiers: ``loss(outputs["logits"], targets)``.
    """
    def deco(fn):
        if name in _METHODS:
            raise KeyError(f"method of model {name!r} registered twice")
        _METHODS[name] = fn
        return fn
    return deco


def method_builder(name: str) -> Callable | None:
    """How model ``name`` trains (its registered method builder), or None for a plain classifier."""
    model_entry(name)
    return _METHODS.get(name)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of model ``name``; an unknown name is a KeyError with a suggestion."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}{did_you_mean(name, _MODELS, 3)}; known: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def list_models() -> list[str]:
    """Names of every registered model."""
    return sorted(_MODELS)


def create_model(name: str, cfg=None, num_classes: int = 80, label_names: list[str] | None = None) -> nn.Module:
    """Build a registered model; ``label_names`` (in class order) feed models with label embeddings."""
    entry = model_entry(name)
    return entry.build(cfg if cfg is not None else entry.config_class(), num_classes, label_names=label_names)


@dataclass(frozen=True)
class OfficialFormat:
    """How the authors ship a model: the file names of their released checkpoints and the converter from
    the official state dict (wrappers and ``module.`` prefixes already removed) to the kit's."""
    model: str
    convert: Callable[[dict, nn.Module], dict]     # (official state dict, kit model) -> kit state dict
    files: tuple[str, ...]                         # e.g. ("checkpoint.pkl",)
    description: str
    config_file: str | None = None                 # a JSON beside the weights that fixes the architecture


_OFFICIAL: dict[str, OfficialFormat] = {}


def register_official(name: str, files: tuple[str, ...], description: str, config_file: str | None = None):
    """Register ``fn(official_state_dict, model) -> kit_state_dict`` for model ``name``'s released checkpoints."""
    def deco(fn):
        if name in _OFFICIAL:
            raise KeyError(f"official format of model {name!r} registered twice")
        model_entry(name)
        _OFFICIAL[name] = OfficialFormat(name, fn, tuple(files), description, config_file)
        return fn
    return deco


def official_format(name: str) -> OfficialFormat:
    """The official checkpoint format of model ``name``; a model without one is a KeyError naming those with one."""
    model_entry(name)
    if name not in _OFFICIAL:
        raise KeyError(f"model {name!r} has no official checkpoint format; models with one: "
                       f"{', '.join(sorted(_OFFICIAL))}")
    return _OFFICIAL[name]
