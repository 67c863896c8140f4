"""The kit's registries: one leaf module that every layer may read and that imports no plug-in.

timm's direction: a registry imports nothing it registers.  The plug-ins (backbones and losses in
:mod:`mlc.modeling`, each method's folder in :mod:`mlc.methods`) register themselves when they are imported;
the registry imports them by name, once, the first time anything is looked up (:func:`discover`).  Which
packages hold plug-ins is said once, by the package root (``mlc/__init__.py``); a method kept outside the kit
adds its importable module to the environment variable ``MLC_PLUGINS`` (comma-separated), so that every
process of a run (papermill kernels, torchrun workers) finds it too.

What is registered, by whom:

| registry | key | value | registered by |
|---|---|---|---|
| ``BACKBONES`` | backbone name | :class:`mlc.modeling.backbones.BackboneSpec` | ``@register_backbone`` |
| ``LOSSES`` | loss name | ``fn(LossParams) -> nn.Module`` | :mod:`mlc.modeling.losses` |
| ``MODELS`` | model name | :class:`ModelEntry` | ``@register_model`` |
| ``METHODS`` | model name | ``fn(model, LossParams) -> Method`` (how it trains) | ``@register_method`` |
| ``OFFICIAL_FORMATS`` | model name | :class:`OfficialFormat` (the authors' released files) | ``@register_official`` |
| ``CLAIMS`` | model name | :class:`Claim` (its paper's claim, measured on a run) | ``@register_claim`` |
| ``PROMPTS`` | text encoder name | ``fn() -> list[str]`` (CLIP prompt templates) | ``@register_prompts`` |
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterator, TypeVar

from mlc.core.suggest import did_you_mean

if TYPE_CHECKING:
    from torch import nn

PLUGINS_ENV = "MLC_PLUGINS"
_plugin_packages: list[str] = []
_imported: set[str] = set()
_discovering = False
_REGISTRIES: list["Registry"] = []


def add_plugin_packages(*names: str) -> None:
    """Name importable packages or modules whose import registers plug-ins (imported at the first lookup)."""
    for name in names:
        if name not in _plugin_packages:
            _plugin_packages.append(name)


def plugin_modules() -> list[str]:
    """The kit's plug-in packages, then those named in ``MLC_PLUGINS``."""
    extra = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    return _plugin_packages + [m for m in extra if m not in _plugin_packages]


def discover() -> None:
    """Import every plug-in package not imported yet (each registers what it holds).

    A lookup made while a plug-in is being imported (a method checking its own model entry) does not start
    the next plug-in's import: that one follows when the current import is done.  A plug-in whose import
    failed is tried again at the next lookup, from a clean slate: what it registered and the modules it
    imported before failing are undone, so that the retry raises the real error again (not "registered
    twice") and a package that failed half-way is imported whole once it is fixed."""
    global _discovering
    if _discovering:
        return
    _discovering = True
    try:
        for name in plugin_modules():
            if name in _imported:
                continue
            _imported.add(name)
            registered = {id(r): dict(r._entries) for r in _REGISTRIES}
            modules_before = set(sys.modules)
            try:
                importlib.import_module(name)
            except BaseException as e:
                _imported.discard(name)
                for r in _REGISTRIES:
                    r._entries = registered[id(r)]
                for module in set(sys.modules) - modules_before:
                    if module == name or module.startswith(name + "."):   # never a library it imported
                        del sys.modules[module]
                missing = getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None
                if missing and name not in _plugin_packages and (name == missing or name.startswith(missing + ".")):
                    raise ModuleNotFoundError(f"{PLUGINS_ENV} names {name!r}, which is not importable ({missing!r} "
                                              f"is not found: is its folder on PYTHONPATH?)", name=name) from None
                raise
    finally:
        _discovering = False


T = TypeVar("T")


class Registry(Generic[T]):
    """Names to entries of one kind; an unknown name is a KeyError that suggests the closest and lists all."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        _REGISTRIES.append(self)

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; a name registered twice is a KeyError."""
        if name in self._entries:
            raise KeyError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry of ``name``."""
        discover()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries, 3)}; known: {known}")
        return self._entries[name]

    def find(self, name: str) -> T | None:
        """The entry of ``name``, or None."""
        discover()
        return self._entries.get(name)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        discover()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests that register a plug-in of their own)."""
        self._entries.pop(name, None)


# ----------------------------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., "nn.Module"]
    config_class: type
    # what the model's ``attention`` output holds, for colour-bar labels (docs/models.md)
    map_kind: str = "attention weight"


BACKBONES: Registry[Any] = Registry("backbone")
LOSSES: Registry[Callable[[Any], "nn.Module"]] = Registry("loss")
MODELS: Registry[ModelEntry] = Registry("model")
METHODS: Registry[Callable] = Registry("method of model")


def register_model(name: str, config_class: type, map_kind: str = "attention weight"):
    """Register ``build(cfg, num_classes, label_names=None) -> nn.Module`` with its params dataclass."""
    def deco(fn):
        MODELS.register(name, ModelEntry(name, fn, config_class, map_kind))
        return fn
    return deco


def register_method(name: str):
    """Register how model ``name`` trains: ``fn(model, loss_params) -> mlc.modeling.method.Method``.

    Models without one train as plain closed-set classifiers: ``loss(outputs["logits"], targets)``.
    """
    def deco(fn):
        METHODS.register(name, fn)
        return fn
    return deco


def method_builder(name: str) -> Callable | None:
    """How model ``name`` trains (its registered method builder), or None for a plain classifier."""
    model_entry(name)
    return METHODS.find(name)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of model ``name``; an unknown name is a KeyError with a suggestion."""
    return MODELS.get(name)


def list_models() -> list[str]:
    """Names of every registered model."""
    return MODELS.names()


def create_model(name: str, cfg=None, num_classes: int = 80, label_names: list[str] | None = None) -> "nn.Module":
    """Build a registered model; ``label_names`` (in class order) feed models with label embeddings."""
    entry = model_entry(name)
    return entry.build(cfg if cfg is not None else entry.config_class(), num_classes, label_names=label_names)


# ------------------------------------------------------------------------------------ released files
@dataclass(frozen=True)
class OfficialFormat:
    """How the authors ship a model: the file names of their released checkpoints and the converter from
    the official state dict (wrappers and ``module.`` prefixes already removed) to the kit's."""
    model: str
    convert: Callable[[dict, "nn.Module"], dict]     # (official state dict, kit model) -> kit state dict
    files: tuple[str, ...]                           # e.g. ("checkpoint.pkl",)
    description: str
    config_file: str | None = None                   # a JSON beside the weights that fixes the architecture
    # (config file, method params, num_classes, params source) -> None, raising where they disagree
    check_config: Callable[..., None] | None = None
    # (state dict of the file, model config) -> the config whose model fits the file (e.g. the width of a
    # label-embedding table the file holds); None: the params' config as it is
    adapt_config: Callable[[dict, Any], Any] | None = None


OFFICIAL_FORMATS: Registry[OfficialFormat] = Registry("official checkpoint format of model")


def register_official(name: str, files: tuple[str, ...], description: str, config_file: str | None = None,
                      check_config: Callable[..., None] | None = None,
                      adapt_config: Callable[[dict, Any], Any] | None = None):
    """Register ``fn(official_state_dict, model) -> kit_state_dict`` for model ``name``'s released checkpoints."""
    def deco(fn):
        model_entry(name)
        OFFICIAL_FORMATS.register(name, OfficialFormat(name, fn, tuple(files), description, config_file,
                                                       check_config, adapt_config))
        return fn
    return deco


def official_format(name: str) -> OfficialFormat:
    """The official checkpoint format of model ``name``; a model without one is a KeyError naming those with one."""
    model_entry(name)
    fmt = OFFICIAL_FORMATS.find(name)
    if fmt is None:
        raise KeyError(f"model {name!r} has no official checkpoint format; models with one: "
                       f"{', '.join(OFFICIAL_FORMATS.names())}")
    return fmt


# ---------------------------------------------------------------------------------------- paper claims
@dataclass(frozen=True)
class Claim:
    """A paper's key claim and how a run measures it.

    ``measure(params, method) -> (metric, values)``: the metric's name and ``{entry: value or None}`` with the
    method's own number first, then what the paper compares it with.  ``compare(values) -> (mine, others)``
    picks the numbers the verdict compares (default: the first against the rest).  ``shown(method_params)``:
    whether a run of this model gets a row of its own in the claims table (MKT's prompt stage does not).
    ``order``: the row's place in that table (the README's method order).  ``outputs``: where the claim compares
    outputs of one trained model instead of separate runs (SGRE's two branches), ``{entry: output key}``, the
    method's own first (what :mod:`mlc.evaluation.mechanisms` scores per group)."""
    model: str
    text: str
    measure: Callable[[Any, str], tuple[str, dict]]
    order: int = 100
    compare: Callable[[dict], tuple] | None = None
    shown: Callable[[Any], bool] | None = None
    outputs: dict[str, str] | None = None


CLAIMS: Registry[Claim] = Registry("paper claim of model")


def register_claim(model: str, text: str, order: int = 100, compare: Callable[[dict], tuple] | None = None,
                   shown: Callable[[Any], bool] | None = None, outputs: dict[str, str] | None = None):
    """Register ``measure(params, method) -> (metric, values)`` as the claim of model ``model``'s paper."""
    def deco(fn):
        CLAIMS.register(model, Claim(model, text, fn, order, compare, shown, outputs))
        return fn
    return deco


# ------------------------------------------------------------------------------------- text encoders
PROMPTS: Registry[Callable[[], list[str]]] = Registry("CLIP prompt set")


def register_prompts(name: str):
    """Register ``fn() -> templates`` as the CLIP label-embedding encoder ``name`` (e.g. ``clip_qks``)."""
    def deco(fn):
        PROMPTS.register(name, fn)
        return fn
    return deco
