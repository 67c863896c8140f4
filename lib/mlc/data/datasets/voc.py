"""PASCAL VOC 2007 / 2012: ``Annotations/*.xml`` + ``ImageSets/Main`` -> manifest.

VOC 2007: train = ``trainval``, test = ``test``.  VOC 2012, whose test labels only the evaluation server holds:
train = ``train``, test = ``val`` (``val`` is part of ``trainval``, so training on ``trainval`` would test on
training images).  ``train_set="trainval"`` keeps that overlap on purpose (SGRE's voc2012.py trains on
trainval and tests on val; the kit then warns that test images are in the training split).  Classes: those
seen in the training set, sorted alphabetically (20).  Objects marked ``difficult``:

- test: a class present in an image *only* as difficult is neither positive nor negative: the cell goes
  to ``ignore`` (the official ``ignore.npy``), which the metrics skip;
- train, ``difficult="salgl"``: such a class is a positive (SALGL's voc2007.py);
  ``"sgre"``: it is a negative (SGRE's); ``"ignore"``: unknown, masked out of the loss.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

from mlc.data.datasets.common import DatasetFormatError, read_lines, report_missing, require
from mlc.data.datasets.registry import register_converter
from mlc.data.manifest import Label, write_manifest

# Display names for text embeddings (the renaming of SALGL/SGRE's embedding.py); ids keep VOC's names.
DISPLAY_NAMES = {"diningtable": "dining table", "pottedplant": "potted plant", "tvmonitor": "tv monitor"}


def parse_annotation(path: Path) -> list[tuple[str, bool]]:
    """(class name lower-cased, difficult) for every object of one VOC XML file."""
    require(path, "annotation")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DatasetFormatError(f"{path}:{e.position[0]}: not well-formed XML ({e})") from None
    objects = []
    for i, obj in enumerate(root.iter("object")):
        name = obj.findtext("name")
        if not name or not name.strip():
            raise DatasetFormatError(f"{path}: object {i} has no <name>")
        difficult = (obj.findtext("difficult") or "0").strip()
        objects.append((name.strip().lower(), difficult == "1"))
    return objects


def _read_set(raw: Path, image_set: str) -> list[str]:
    return [line.split()[0] for line in read_lines(raw / "ImageSets" / "Main" / f"{image_set}.txt")]


@register_converter("voc")
def convert_voc(raw_root, out_dir, year: int = 2007, difficult: str = "salgl", strict: bool = True,
                train_set: str | None = None):
    """``raw_root`` is ``VOCdevkit/VOC<year>`` (Annotations, ImageSets/Main, JPEGImages)."""
    if difficult not in ("salgl", "sgre", "ignore"):
        raise ValueError(f"difficult must be 'salgl', 'sgre' or 'ignore', got {difficult!r}")
    if year not in (2007, 2012):
        raise ValueError(f"year must be 2007 or 2012, got {year!r}")
    train_set = train_set or ("trainval" if year == 2007 else "train")
    if train_set not in ("train", "trainval"):
        raise ValueError(f"train_set must be 'train' or 'trainval', got {train_set!r}")
    raw = Path(raw_root)
    sets = {"train": train_set, "test": "test" if year == 2007 else "val"}
    ids = {split: _read_set(raw, s) for split, s in sets.items()}
    objects = {split: [parse_annotation(raw / "Annotations" / f"{i}.xml") for i in ids[split]] for split in ids}
    classes = sorted({name for objs in objects["train"] for name, _ in objs})
    index = {c: k for k, c in enumerate(classes)}
    splits = {}
    for split in ("train", "test"):
        rows = []
        for image_id, objs in zip(ids[split], objects[split]):
            unknown = [n for n, _ in objs if n not in index]
            if unknown:
                raise DatasetFormatError(f"{raw / 'Annotations' / (image_id + '.xml')}: unknown class {unknown[0]!r} "
                                         f"(classes come from {train_set}: {', '.join(classes)})")
            easy = {index[n] for n, d in objs if not d}
            hard_only = {index[n] for n, d in objs if d} - easy
            pos, ignore = set(easy), set()
            if split == "test" or difficult == "ignore":
                ignore = hard_only
            elif difficult == "salgl":
                pos |= hard_only
            rows.append({"image": f"JPEGImages/{image_id}.jpg", "pos": sorted(pos), "ignore": sorted(ignore),
                         "voc_id": image_id})
        splits[split] = pd.DataFrame(rows)
    missing = [r for df in splits.values() for r in df["image"] if not (raw / r).is_file()]
    report_missing(Path(out_dir), missing, strict, f"VOC {year}", raw)
    labels = [Label(k, c, DISPLAY_NAMES.get(c, c)) for k, c in enumerate(classes)]
    return write_manifest(out_dir, name=f"voc{year}", labels=labels, splits=splits, image_root=str(raw.resolve()),
                          absent="negative", extra={"source": "voc", "difficult": difficult, "train_set": train_set})
