"""Converters from the real datasets' on-disk layouts to the kit's manifest (docs/manifest.md).

``convert_dataset(name, raw_root, out_dir, **options)`` runs the converter registered under ``name``;
``list_converters()`` names them.  Each reads the files exactly as the official preparation scripts
do (see docs/datasets.md) and fails with an error that names the file (and line) it could not read.
Importing this package imports every converter module, which registers itself in :mod:`.registry`.
"""
from mlc.data.datasets import coco, nuswide, openimages, vg, voc  # noqa: F401  (each registers its converter)
from mlc.data.datasets.registry import convert_dataset, list_converters, register_converter  # noqa: F401
