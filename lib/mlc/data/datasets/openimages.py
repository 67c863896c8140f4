"""Open Images V4 (2018_04), 7,186 seen / 400 unseen labels (the LESA protocol of MKT and QKS).

Under ``<raw>/2018_04/``: ``class-descriptions.csv`` (MID,name; no header), ``classes-trainable.txt``
(the 7,186 seen MIDs), ``unseen_labels.pkl`` (a list of 2,594 MIDs) and ``top_400_unseen.csv`` (one
index per row into that list: the 400 unseen labels), and the human image-level labels
``{train,test}/{train,test}-annotations-human-imagelabels.csv`` (ImageID, Source, LabelName, Confidence).

- Confidence 1 -> positive, any other value -> known negative, not listed -> unknown (``absent: unknown``).
- Train keeps the seen labels, test the seen and the unseen ones (seen first, then unseen, each sorted
  by display name as the official script sorts them).  Labels are keyed by MID: display names repeat.
- An image with a label both positive and negative is dropped (counted in the meta), and so is an
  image without any positive (the official loader's ``dropna``).
- Images are looked up under ``<images>/<split>/`` at any depth (the downloader shards them);
  missing ones are dropped and listed in ``missing_images.txt`` (``check_images=False`` skips the
  lookup, e.g. to convert the labels before downloading).

Everything is vectorised with pandas / numpy: millions of CSV rows, no Python loop per row.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from mlc.core.safe_load import load_pickle
from mlc.data.datasets.common import DatasetFormatError, group_lists, read_lines, report_missing, require
from mlc.data.datasets.registry import register_converter
from mlc.data.manifest import Label, write_manifest


def read_class_descriptions(path: Path) -> dict[str, str]:
    """MID -> display name from ``class-descriptions.csv`` (no header)."""
    require(path)
    try:
        df = pd.read_csv(path, header=None, names=["mid", "name"], dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError) as e:
        raise DatasetFormatError(f"{path}: not a 'MID,name' CSV ({e})") from None
    bad = (df["mid"] == "") | (df["name"] == "")
    if bad.any():
        raise DatasetFormatError(f"{path}:{int(np.argmax(bad.to_numpy())) + 1}: expected 'MID,name'")
    return dict(zip(df["mid"], df["name"]))


def _named(mids: list[str], names: dict[str, str], source: Path) -> list[tuple[str, str]]:
    for i, mid in enumerate(mids):
        if mid not in names:
            raise DatasetFormatError(f"{source}:{i + 1}: label {mid!r} is not in class-descriptions.csv")
    return sorted(((mid, names[mid]) for mid in mids), key=lambda t: (t[1], t[0]))


def read_label_split(meta_dir: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(seen, unseen) lists of (MID, display name), each sorted by name."""
    names = read_class_descriptions(meta_dir / "class-descriptions.csv")
    trainable = meta_dir / "classes-trainable.txt"
    seen = _named(read_lines(trainable), names, trainable)
    pkl = require(meta_dir / "unseen_labels.pkl")
    try:
        pool = [m.decode() if isinstance(m, bytes) else str(m) for m in load_pickle(pkl)]
    except (pickle.UnpicklingError, EOFError, TypeError) as e:
        raise DatasetFormatError(f"{pkl}: expected a pickled list of MIDs ({e!r})") from None
    top = meta_dir / "top_400_unseen.csv"
    picked = []
    for i, line in enumerate(read_lines(top, skip_empty=False)):
        if not line:
            continue
        value = line.split(",")[0].strip()
        if not value.lstrip("-").isdigit() or not 0 <= int(value) < len(pool):
            raise DatasetFormatError(f"{top}:{i + 1}: expected an index into unseen_labels.pkl "
                                     f"(0..{len(pool) - 1}), got {line!r}")
        picked.append(pool[int(value)])
    unseen = _named(picked, names, top)
    overlap = {m for m, _ in seen} & {m for m, _ in unseen}
    if overlap:
        raise DatasetFormatError(f"{top}: unseen labels also trainable: {sorted(overlap)[:3]}")
    return seen, unseen


def read_human_labels(path: Path) -> pd.DataFrame:
    """ImageID, LabelName, Confidence columns of a human image-level label CSV (pyarrow-backed, compact)."""
    require(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        header = [c.strip() for c in f.readline().strip().split(",")]
    missing = [c for c in ("ImageID", "LabelName", "Confidence") if c not in header]
    if missing:
        raise DatasetFormatError(f"{path}:1: expected columns ImageID, Source, LabelName, Confidence; "
                                 f"missing {', '.join(missing)}")
    try:
        df = pd.read_csv(path, usecols=["ImageID", "LabelName", "Confidence"], engine="pyarrow",
                         dtype_backend="pyarrow")
    except ValueError as e:
        raise DatasetFormatError(f"{path}: expected columns ImageID, Source, LabelName, Confidence ({e})") from None
    except Exception as e:                     # pyarrow.lib.ArrowInvalid for malformed rows
        raise DatasetFormatError(f"{path}: malformed CSV ({str(e).splitlines()[0]})") from None
    if len(df) == 0:
        raise DatasetFormatError(f"{path}: no label rows (only a header); expected ImageID,Source,LabelName,Confidence "
                                 f"lines")
    conf = pd.to_numeric(df["Confidence"], errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
    bad = np.isnan(conf)
    if bad.any():
        raise DatasetFormatError(f"{path}:{int(np.argmax(bad)) + 2}: Confidence is not a number")
    df["Confidence"] = conf
    return df


def labels_to_rows(df: pd.DataFrame, mids: list[str]) -> tuple[pd.DataFrame, int]:
    """Per image: positive and negative label indices among ``mids``; drops conflicting images.

    Returns the rows (ImageID, pos, neg) and the number of images dropped for conflicts.
    """
    label = pd.Index(mids).get_indexer(df["LabelName"]).astype(np.int64)     # -1: not one of ``mids``
    keep = label >= 0
    image_codes, image_ids = pd.factorize(df["ImageID"].to_numpy()[keep])
    label = label[keep]
    positive = (df["Confidence"].to_numpy()[keep] == 1)
    n_labels, n_images = len(mids), len(image_ids)
    pos_key = np.unique(image_codes[positive] * n_labels + label[positive])
    neg_key = np.unique(image_codes[~positive] * n_labels + label[~positive])
    conflict = np.zeros(n_images, bool)
    conflict[np.intersect1d(pos_key, neg_key) // n_labels] = True
    pos_key = pos_key[~conflict[pos_key // n_labels]]
    neg_key = neg_key[~conflict[neg_key // n_labels]]
    pos = group_lists(pos_key // n_labels, pos_key % n_labels, n_images)
    neg = group_lists(neg_key // n_labels, neg_key % n_labels, n_images)
    rows = pd.DataFrame({"image_id": np.asarray(image_ids, dtype=object), "pos": pos, "neg": neg})
    return rows[~conflict].reset_index(drop=True), int(conflict.sum())


def index_images(folder: Path) -> dict[str, str]:
    """ImageID -> path relative to the folder's parent, for every ``*.jpg`` at any depth."""
    out: dict[str, str] = {}
    if not folder.is_dir():
        return out
    for dirpath, _, files in os.walk(folder):
        rel = Path(dirpath).relative_to(folder.parent)
        for f in files:
            if f.endswith(".jpg"):
                out[f[:-4]] = f"{rel.as_posix()}/{f}"
    return out


@register_converter("openimages")
def convert_openimages(raw_root, out_dir, images_root=None, check_images: bool = True, strict: bool = False,
                       release: str = "2018_04"):
    """``raw_root`` holds ``<release>/``; images under ``images_root`` (default ``raw_root``) in
    ``train/`` and ``test/``, as the downloader writes them."""
    raw, out_dir = Path(raw_root), Path(out_dir)
    images_root = Path(images_root) if images_root else raw
    meta_dir = raw / release
    seen, unseen = read_label_split(meta_dir)
    label_mids = {"train": [m for m, _ in seen], "test": [m for m, _ in seen] + [m for m, _ in unseen]}
    frames, conflicts, missing_all = {}, {}, []
    for split in ("train", "test"):
        csv = meta_dir / split / f"{split}-annotations-human-imagelabels.csv"
        rows, conflicts[split] = labels_to_rows(read_human_labels(csv), label_mids[split])
        rows = rows[rows["pos"].map(len) > 0]            # the official loader drops rows without positives
        if check_images:
            where = index_images(images_root / split)
            rel = rows["image_id"].map(where)
            missing_all += [f"{split}/{i}.jpg" for i in rows["image_id"][rel.isna()]]
            rows = rows.assign(image=rel)[rel.notna()]
        else:
            rows = rows.assign(image=split + "/" + rows["image_id"] + ".jpg")
        frames[split] = rows[["image", "pos", "neg", "image_id"]].reset_index(drop=True)
    if check_images:
        report_missing(out_dir, missing_all, strict, "Open Images", images_root)
    labels = [Label(i, m, n, True) for i, (m, n) in enumerate(seen)] + \
             [Label(len(seen) + i, m, n, False) for i, (m, n) in enumerate(unseen)]
    return write_manifest(out_dir, name=f"openimages_{release}", labels=labels, splits=frames,
                          image_root=str(images_root.resolve()), absent="unknown",
                          extra={"source": "openimages", "conflicting_images_dropped": conflicts,
                                 "missing_images": len(missing_all)})
