"""Visual Genome 500 (the SSGRL 500-category partition).  SGRE's README names ``vg500.py``, which was never
published; this mapping is the kit's design (docs/datasets.md):

Inputs under ``<raw>``: ``ssgrl_partition/train_list_500.txt`` and ``test_list_500.txt`` (one image file
name per line, e.g. ``2345678.jpg``; anything after the first whitespace or comma is ignored),
``ssgrl_partition/vg_category_500_labels_index.json`` (``{category name: index}``, indices 0..499),
``objects.json`` (the Visual Genome objects file: a list of ``{"image_id", "objects": [{"names": [...]}]}``)
and the images in ``VG_100K/`` or ``VG_100K_2/``.

An image's positives are the categories among the names of its objects (names lower-cased and stripped,
the same normalisation the category index gets).  Labels are ordered by their index in the JSON.  A
listed image absent from objects.json is an error; one without any of the 500 categories is dropped and
counted; missing image files are listed in ``missing_images.txt`` and dropped (``strict``: an error).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlc.data.datasets.common import DatasetFormatError, read_json, read_lines, report_missing
from mlc.data.datasets.registry import register_converter
from mlc.data.manifest import Label, write_manifest


def _list(path: Path) -> list[str]:
    return [line.replace(",", " ").split()[0] for line in read_lines(path)]


@register_converter("vg500")
def convert_vg500(raw_root, out_dir, strict: bool = False):
    """Visual Genome 500 from the SSGRL partition and ``objects.json`` (see the module docstring)."""
    raw, out_dir = Path(raw_root), Path(out_dir)
    part = raw / "ssgrl_partition"
    index_path = part / "vg_category_500_labels_index.json"
    index = read_json(index_path, dict, "(category name -> index)")
    if not isinstance(index, dict) or not all(isinstance(v, int) for v in index.values()):
        raise DatasetFormatError(f"{index_path}: expected a mapping of category name to integer index")
    if sorted(index.values()) != list(range(len(index))):
        raise DatasetFormatError(f"{index_path}: indices must be 0..{len(index) - 1}, each once")
    by_name = {name.strip().lower(): i for name, i in index.items()}
    objects_path = raw / "objects.json"
    objects = read_json(objects_path, list, "of images")
    per_image = {}
    for k, entry in enumerate(objects):
        if not isinstance(entry, dict) or "image_id" not in entry or "objects" not in entry:
            raise DatasetFormatError(f"{objects_path}: entry {k} lacks 'image_id' or 'objects'")
        if not isinstance(entry["objects"], list):
            raise DatasetFormatError(f"{objects_path}: entry {k} (image {entry['image_id']}): 'objects' must be a list")
        cats = set()
        for j, o in enumerate(entry["objects"]):
            names = o.get("names", []) if isinstance(o, dict) else None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise DatasetFormatError(f"{objects_path}: entry {k} (image {entry['image_id']}) object {j}: 'names' "
                                         f"must be a list of strings, got {names!r}")
            cats.update(by_name[n.strip().lower()] for n in names if n.strip().lower() in by_name)
        image_id = str(entry["image_id"])
        if image_id in per_image:
            raise DatasetFormatError(f"{objects_path}: entry {k} repeats image {image_id}")
        per_image[image_id] = sorted(cats)
    frames, dropped, missing = {}, {}, []
    for split, name in (("train", "train_list_500.txt"), ("test", "test_list_500.txt")):
        rows = []
        for line_no, fname in enumerate(_list(part / name), 1):
            image_id = Path(fname).stem
            if image_id not in per_image:
                raise DatasetFormatError(f"{part / name}:{line_no}: image {fname} is not in objects.json")
            rel = next((f"{d}/{fname}" for d in ("VG_100K", "VG_100K_2") if (raw / d / fname).is_file()), None)
            if rel is None:
                missing.append(f"VG_100K/{fname}")
                continue
            rows.append({"image": rel, "pos": per_image[image_id], "vg_id": int(image_id)})
        df = pd.DataFrame(rows, columns=["image", "pos", "vg_id"])
        keep = df["pos"].map(len) > 0
        dropped[split] = int((~keep).sum())
        frames[split] = df[keep].reset_index(drop=True)
    report_missing(out_dir, missing, strict, "Visual Genome", raw)
    names = sorted(index, key=index.get)
    labels = [Label(index[n], n, n) for n in names]
    return write_manifest(out_dir, name="vg500", labels=labels, splits=frames, image_root=str(raw.resolve()),
                          absent="negative", extra={"source": "vg500", "images_without_labels_dropped": dropped,
                                                    "missing_images": len(missing)})
