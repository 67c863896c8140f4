"""Converter registry: ``@register_converter(name)``; imports no converter (the package does)."""
from __future__ import annotations

import inspect
import json
from typing import Callable

from mlc.core.io import atomic_write_text
from mlc.core.suggest import did_you_mean
from mlc.data.manifest import Manifest

_CONVERTERS: dict[str, Callable] = {}


def register_converter(name: str):
    """Register ``fn(raw_root, out_dir, **options) -> Manifest`` under ``name``."""
    def deco(fn):
        if name in _CONVERTERS:
            raise KeyError(f"converter {name!r} registered twice")
        _CONVERTERS[name] = fn
        return fn
    return deco


def list_converters() -> list[str]:
    """Names of every registered converter."""
    return sorted(_CONVERTERS)


def check_options(name: str, options: dict) -> None:
    """Every option is one the converter takes: a misspelt ``data.source_options`` key is named with the closest
    option, before the converter reads a file (it used to pass loading and fail inside the converter)."""
    parameters = list(inspect.signature(_CONVERTERS[name]).parameters.values())[2:]     # after raw_root, out_dir
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    known = [p.name for p in parameters]
    for key in options:
        if key not in known:
            raise ValueError(f"data.source_options: the {name} converter has no option {key!r}"
                             f"{did_you_mean(key, known)}; its options: {', '.join(known) or 'none'}")


def convert_dataset(name: str, raw_root, out_dir, **options) -> Manifest:
    """Convert the raw dataset under ``raw_root`` into a manifest in ``out_dir``; returns the Manifest."""
    if name not in _CONVERTERS:
        raise KeyError(f"unknown dataset {name!r}{did_you_mean(name, _CONVERTERS, 2)}; "
                       f"known: {', '.join(sorted(_CONVERTERS))}")
    check_options(name, options)
    manifest = _CONVERTERS[name](raw_root, out_dir, **options)
    meta = dict(manifest.meta)
    meta["conversion"] = {"source": name, "raw_root": str(raw_root), "options": options}
    atomic_write_text(manifest.root / "meta.json", json.dumps(meta, indent=1))
    return Manifest(manifest.root)
