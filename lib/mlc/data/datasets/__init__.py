"""Converters from the real datasets' on-disk layouts to the kit's manifest (docs/manifest.md).

``convert_dataset(name, raw_root, out_dir, **options)`` runs the converter registered under ``name``;
``list_converters()`` names them.  Each reads the files exactly as the official preparation scripts
do (see docs/datasets.md) and fails with an error that names the file (and line) it could not read.
"""
from __future__ import annotations

import difflib
from typing import Callable

_CONVERTERS: dict[str, Callable] = {}


def register_converter(name: str):
    def deco(fn):
        if name in _CONVERTERS:
            raise KeyError(f"converter {name!r} registered twice")
        _CONVERTERS[name] = fn
        return fn
    return deco


def _load_all() -> None:
    from . import coco, nuswide, openimages, vg, voc  # noqa: F401  (register the converters)


def list_converters() -> list[str]:
    _load_all()
    return sorted(_CONVERTERS)


def convert_dataset(name: str, raw_root, out_dir, **options):
    """Convert the raw dataset under ``raw_root`` into a manifest in ``out_dir``; returns the Manifest."""
    _load_all()
    if name not in _CONVERTERS:
        close = difflib.get_close_matches(name, _CONVERTERS, n=2)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise KeyError(f"unknown dataset {name!r}{hint}; known: {', '.join(sorted(_CONVERTERS))}")
    manifest = _CONVERTERS[name](raw_root, out_dir, **options)
    import json
    from ...io import atomic_write_text
    from ..manifest import Manifest
    meta = dict(manifest.meta)
    meta["conversion"] = {"source": name, "raw_root": str(raw_root), "options": options}
    atomic_write_text(manifest.root / "meta.json", json.dumps(meta, indent=1))
    return Manifest(manifest.root)
