"""MS-COCO 2014: ``annotations/instances_{train,val}2014.json`` -> manifest (train = train2014, test = val2014).

80 categories in category-id order (person, bicycle, car, ...).  ``keep_empty=True`` keeps images without
annotations, as Query2Label does (82,783 / 40,504 images); ``False`` drops them, as SALGL and SGRE do
(82,081 / 40,137).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlc.data.datasets.common import DatasetFormatError, group_lists, read_json
from mlc.data.datasets.registry import register_converter
from mlc.data.manifest import Label, write_manifest


def _check_records(path: Path, key: str, records: list, fields: dict[str, type]) -> None:
    """Every record of ``data[key]`` is an object with each field present and of its type."""
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise DatasetFormatError(f"{path}: {key}[{i}] must be an object, got {type(r).__name__}")
        for name, tp in fields.items():
            v = r.get(name)
            if v is None or not isinstance(v, tp) or isinstance(v, bool):
                got = "missing" if name not in r else f"{v!r}"
                raise DatasetFormatError(f"{path}: {key}[{i}] needs {name!r} ({tp.__name__}), got {got}")


def _split(raw: Path, json_name: str, image_dir: str, cat_index: dict[int, int], keep_empty: bool) -> pd.DataFrame:
    path = raw / "annotations" / json_name
    data = read_json(path, dict, "(a COCO instances file)")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetFormatError(f"{path}: missing key {key!r} (is this a COCO instances file?)")
        if not isinstance(data[key], list):
            raise DatasetFormatError(f"{path}: {key!r} must be a list, got {type(data[key]).__name__}")
    _check_records(path, "images", data["images"], {"id": int, "file_name": str})
    _check_records(path, "annotations", data["annotations"], {"image_id": int, "category_id": int})
    images = pd.DataFrame(data["images"])
    if images.empty:
        raise DatasetFormatError(f"{path}: 'images' is empty")
    dup = images["id"].duplicated()
    if dup.any():
        raise DatasetFormatError(f"{path}: images[{int(np.argmax(dup.to_numpy()))}] repeats image id "
                                 f"{int(images['id'][dup].iloc[0])}")
    images = images.sort_values("id").reset_index(drop=True)
    anns = pd.DataFrame(data["annotations"], columns=["image_id", "category_id"])
    unknown = set(anns["category_id"].unique()) - set(cat_index)
    if unknown:
        raise DatasetFormatError(f"{path}: annotations use unknown category ids {sorted(unknown)[:5]}")
    row_of = pd.Series(np.arange(len(images)), index=images["id"].to_numpy())
    missing = ~anns["image_id"].isin(row_of.index)
    if missing.any():
        raise DatasetFormatError(f"{path}: annotation for unknown image id {int(anns['image_id'][missing].iloc[0])}")
    pos = group_lists(row_of[anns["image_id"]].to_numpy(), anns["category_id"].map(cat_index).to_numpy(), len(images))
    df = pd.DataFrame({"image": image_dir + "/" + images["file_name"].astype(str), "pos": pos,
                       "coco_id": images["id"].astype(np.int64)})
    for col in ("width", "height"):
        if col in images:
            df[col] = images[col].astype(np.int64)
    if not keep_empty:
        df = df[df["pos"].map(len) > 0].reset_index(drop=True)
    return df


@register_converter("coco")
def convert_coco(raw_root, out_dir, keep_empty: bool = False, year: int = 2014):
    """``raw_root`` holds ``annotations/``, ``train2014/`` and ``val2014/``."""
    raw = Path(raw_root)
    train_json = f"instances_train{year}.json"
    cats_path = raw / "annotations" / train_json
    cats = read_json(cats_path, dict, "(a COCO instances file)").get("categories")
    if not cats or not isinstance(cats, list):
        raise DatasetFormatError(f"{cats_path}: no 'categories' list")
    _check_records(cats_path, "categories", cats, {"id": int, "name": str})
    ids = [c["id"] for c in cats]
    if len(set(ids)) != len(ids):
        repeated = sorted(i for i in set(ids) if ids.count(i) > 1)
        raise DatasetFormatError(f"{cats_path}: category ids repeat ({repeated})")
    cats = sorted(cats, key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    labels = [Label(i, str(c["id"]), c["name"]) for i, c in enumerate(cats)]
    splits = {"train": _split(raw, train_json, f"train{year}", cat_index, keep_empty),
              "test": _split(raw, f"instances_val{year}.json", f"val{year}", cat_index, keep_empty)}
    return write_manifest(out_dir, name=f"coco{year}", labels=labels, splits=splits, image_root=str(raw.resolve()),
                          absent="negative", extra={"source": "coco", "keep_empty": keep_empty})
