"""The kit's one dataset manifest format (see docs/manifest.md).

A manifest is a directory::

    <manifest dir>/
      meta.json          dataset name, format version, label table, image root, absent-label policy
      <split>.parquet    one row per image, sparse label lists (train.parquet, val.parquet, test.parquet, ...)

It is designed for the largest case, Open Images (1.7 M images x 7,586 labels): labels are stored
as sparse per-image lists of label indices, never as a dense matrix.  Each (image, label) cell is

* positive      if the label index is in ``pos``,
* known negative if it is in ``neg``,
* unknown       if it is in ``ignore``,
* otherwise ``meta["absent"]``: "negative" (closed-world datasets: COCO, VOC, toy) or "unknown"
  (Open Images, where only human-verified labels are known).

Dense targets use 1 = positive, 0 = negative, -1 = unknown.  A label is an ``object`` (the default) or a ``tag``
(a word an image was tagged with: the toy world's broad seen vocabulary); ``label_subset("objects")`` is what a
closed-set method learns.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from mlc.core.io import atomic_write, atomic_write_text

FORMAT_VERSION = 1
POSITIVE, NEGATIVE, UNKNOWN = 1, 0, -1
LIST_COLUMNS = ("pos", "neg", "ignore", "box_labels", "boxes")
OPTIONAL_COLUMNS = {"neg": list, "ignore": list, "scene": int, "caption": str, "box_labels": list,
                    "boxes": list, "width": int, "height": int}


class ManifestError(ValueError):
    """A manifest file is missing, malformed or inconsistent; the message names the file."""


LABEL_KINDS = ("object", "tag")


@dataclass(frozen=True)
class Label:
    index: int
    id: str          # stable key (COCO category id, Open Images MID, toy label name)
    name: str        # display name, used for text embeddings
    seen: bool = True
    # "object": a thing annotated in the image (what closed-set methods learn and are scored on); "tag": a word
    # or phrase a user tagged the image with (the toy world's broad seen vocabulary: "red", "circle", "beach")
    kind: str = "object"


def write_manifest(out_dir: str | os.PathLike, *, name: str, labels: Sequence[Label],
                   splits: dict[str, pd.DataFrame], image_root: str = ".", absent: str = "negative",
                   extra: dict | None = None) -> "Manifest":
    """Write ``meta.json`` and one parquet file per split; returns the loaded manifest.

    ``image_root`` is relative to ``out_dir`` (or absolute); each row's ``image`` is relative to it.
    Every file is written to a temporary name and renamed, so a crash never leaves half a manifest
    that looks complete (``meta.json`` is written last).
    """
    if absent not in ("negative", "unknown"):
        raise ValueError(f"absent must be 'negative' or 'unknown', got {absent!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, lab in enumerate(labels):
        if lab.index != i:
            raise ValueError(f"label {lab.name!r} has index {lab.index}, expected {i} (labels must be in index order)")
        if lab.kind not in LABEL_KINDS:
            raise ValueError(f"label {lab.name!r} has kind {lab.kind!r}, not one of {list(LABEL_KINDS)}")
    for split, df in splits.items():      # every split checked before any is written
        if "image" not in df or "pos" not in df:
            raise ValueError(f"split {split!r}: columns 'image' and 'pos' are required")
        duplicated = df["image"].duplicated()
        if duplicated.any():        # reading refuses it too: no manifest that cannot be read is written
            raise ValueError(f"split {split!r}: {int(duplicated.sum())} images are listed more than once "
                             f"(first: {df['image'][duplicated].iloc[0]!r})")
    counts = {}
    for split, df in splits.items():
        atomic_write(out / f"{split}.parquet", lambda tmp: df.reset_index(drop=True).to_parquet(tmp, index=False))
        counts[split] = int(len(df))
    meta = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "image_root": str(image_root),
        "absent": absent,
        "labels": [{"index": l.index, "id": l.id, "name": l.name, "seen": l.seen, "kind": l.kind} for l in labels],
        "splits": counts,
        **(extra or {}),
    }
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=1))
    return Manifest(out)


class Manifest:
    """Read access to a manifest directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise ManifestError(f"{meta_path}: manifest metadata not found (did the data preparation step run?)")
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise ManifestError(f"{meta_path}: not valid JSON (line {e.lineno}: {e.msg})") from None
        for key in ("format_version", "name", "image_root", "absent", "labels", "splits"):
            if key not in self.meta:
                raise ManifestError(f"{meta_path}: missing key {key!r}")
        if self.meta["format_version"] != FORMAT_VERSION:
            raise ManifestError(f"{meta_path}: format_version {self.meta['format_version']} is not supported "
                                f"(this kit reads version {FORMAT_VERSION})")
        if self.meta["absent"] not in ("negative", "unknown"):
            raise ManifestError(f"{meta_path}: 'absent' must be 'negative' or 'unknown'")
        fields = [f.name for f in dataclasses.fields(Label)]
        required = [f.name for f in dataclasses.fields(Label)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        self.labels = []
        for i, entry in enumerate(self.meta["labels"]):
            if not isinstance(entry, dict):
                raise ManifestError(f"{meta_path}: labels[{i}] is {entry!r}, not a mapping with keys {fields}")
            extra = sorted(set(entry) - set(fields))
            missing = [k for k in required if k not in entry]
            if extra or missing:
                raise ManifestError(f"{meta_path}: labels[{i}] " + "; ".join(
                    ([f"has unknown keys {extra}"] if extra else []) + ([f"lacks {missing}"] if missing else []))
                    + f" (a label has {fields})")
            if entry.get("kind", "object") not in LABEL_KINDS:
                raise ManifestError(f"{meta_path}: labels[{i}] ({entry.get('name')!r}) has kind {entry['kind']!r}, "
                                    f"not one of {list(LABEL_KINDS)}")
            self.labels.append(Label(**entry))
        if not self.labels:
            raise ManifestError(f"{meta_path}: the manifest has no labels; a multi-label dataset needs at least one")
        for i, lab in enumerate(self.labels):
            if lab.index != i:
                raise ManifestError(f"{meta_path}: label {lab.name!r} has index {lab.index}, expected {i}")
        self._splits: dict[str, pd.DataFrame] = {}

    # -- labels ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The dataset's name."""
        return self.meta["name"]

    @property
    def num_labels(self) -> int:
        """Number of labels."""
        return len(self.labels)

    @property
    def label_names(self) -> list[str]:
        """Display names, in label-index order."""
        return [l.name for l in self.labels]

    @property
    def seen_indices(self) -> np.ndarray:
        """Indices of the seen labels."""
        return np.array([l.index for l in self.labels if l.seen], dtype=np.int64)

    @property
    def unseen_indices(self) -> np.ndarray:
        """Indices of the unseen labels (open vocabulary)."""
        return np.array([l.index for l in self.labels if not l.seen], dtype=np.int64)

    @property
    def object_indices(self) -> np.ndarray:
        """Indices of the object labels (every label of a manifest without tags)."""
        return np.array([l.index for l in self.labels if l.kind == "object"], dtype=np.int64)

    @property
    def tag_indices(self) -> np.ndarray:
        """Indices of the tag labels (``kind: "tag"``; the toy world's broad seen vocabulary)."""
        return np.array([l.index for l in self.labels if l.kind == "tag"], dtype=np.int64)

    def label_subset(self, which: str) -> np.ndarray:
        """Indices of the labels in ``which``: 'all', 'seen', 'unseen', 'objects' (what closed-set methods learn:
        every label of a manifest without tags) or 'tags'."""
        subsets = {"all": lambda: np.arange(self.num_labels), "seen": lambda: self.seen_indices,
                   "unseen": lambda: self.unseen_indices, "objects": lambda: self.object_indices,
                   "tags": lambda: self.tag_indices}
        if which not in subsets:
            raise ValueError(f"label subset must be one of {list(subsets)}, got {which!r}")
        return subsets[which]()

    @property
    def image_root(self) -> Path:
        """The folder image paths are relative to."""
        root = Path(self.meta["image_root"])
        return root if root.is_absolute() else self.root / root

    @property
    def split_names(self) -> list[str]:
        """The manifest's splits (train, val, test, ...)."""
        return list(self.meta["splits"])

    # -- rows -----------------------------------------------------------------------------------
    def split(self, name: str) -> pd.DataFrame:
        """A split's rows (read once, validated); a missing or corrupt file is a :class:`ManifestError`."""
        if name not in self._splits:
            path = self.root / f"{name}.parquet"
            if name not in self.meta["splits"] or not path.is_file():
                raise ManifestError(f"{path}: split {name!r} not found (manifest has {self.split_names})")
            try:
                df = pd.read_parquet(path)
            except Exception as e:  # pyarrow raises several types for corrupt files
                raise ManifestError(f"{path}: cannot read parquet file ({e})") from None
            self._validate(df, path)
            self._splits[name] = df
        return self._splits[name]

    def _validate(self, df: pd.DataFrame, path: Path) -> None:
        for col in ("image", "pos"):
            if col not in df:
                raise ManifestError(f"{path}: required column {col!r} missing")
        duplicated = df["image"].duplicated()
        if duplicated.any():
            first = df["image"][duplicated].iloc[0]
            raise ManifestError(f"{path}: {int(duplicated.sum())} images are listed more than once (first: {first!r}, "
                                f"rows {df.index[df['image'] == first].tolist()[:5]}); each image must be one row, or "
                                f"it counts several times in every metric")
        n = self.num_labels
        for col in ("pos", "neg", "ignore"):
            if col not in df:
                continue
            values = df[col].to_numpy()
            try:
                lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
            except TypeError:
                row = next(i for i, v in enumerate(values) if not hasattr(v, "__len__") or isinstance(v, str))
                raise ManifestError(f"{path}: row {row} (image {df['image'].iloc[row]!r}) column {col!r} holds "
                                    f"{values[row]!r}, not a list of label indices") from None
            if lengths.sum() == 0:
                continue
            flat = np.concatenate([np.asarray(v) for v in values if len(v)])
            whole = flat.dtype.kind in "iu" or (flat.dtype.kind == "f" and bool(np.isfinite(flat).all())
                                                and bool((flat == np.round(flat)).all()))
            if not whole:
                first = int(np.flatnonzero(~_whole_numbers(flat))[0])
                row = int(np.searchsorted(np.cumsum(lengths), first, side="right"))
                value = flat[first].item() if hasattr(flat[first], "item") else flat[first]
                raise ManifestError(f"{path}: row {row} (image {df['image'].iloc[row]!r}) column {col!r} has label "
                                    f"{value!r}, not a whole label index")
            bad = (flat < 0) | (flat >= n)
            if bad.any():
                row = int(np.searchsorted(np.cumsum(lengths), np.flatnonzero(bad)[0], side="right"))
                raise ManifestError(f"{path}: row {row} (image {df['image'].iloc[row]!r}) column {col!r} has label "
                                    f"index {int(flat[bad][0])}, outside 0..{n - 1}")

    def dense_targets(self, split: str, labels: Iterable[int] | None = None) -> np.ndarray:
        """[N, C'] int8 matrix of 1 / 0 / -1 for the given label indices (all labels by default)."""
        df = self.split(split)
        return dense_targets(df, self.num_labels, self.meta["absent"], labels)

    def label_counts(self, split: str, column: str = "pos", rows: np.ndarray | None = None) -> np.ndarray:
        """Images per label in ``column`` (pos / neg / ignore), from the sparse lists: [C] int64.
        ``rows``: a boolean mask selecting the images counted (e.g. one scene)."""
        df = self.split(split)
        if rows is not None:
            df = df[np.asarray(rows, dtype=bool)]
        if column not in df:
            return np.zeros(self.num_labels, np.int64)
        return np.bincount(_flat(df[column].to_numpy())[1], minlength=self.num_labels)

    def labels_per_image(self, split: str, labels: Iterable[int] | None = None) -> np.ndarray:
        """Number of positive labels of each image of a split (among ``labels``: all by default)."""
        pos = self.split(split)["pos"]
        if labels is None:
            return pos.map(len).to_numpy()
        keep = np.zeros(self.num_labels, bool)
        keep[np.asarray(list(labels), dtype=np.int64)] = True
        return np.fromiter((int(keep[np.asarray(v, dtype=np.int64)].sum()) for v in pos), np.int64, len(pos))


def _whole_numbers(values: np.ndarray) -> np.ndarray:
    """Which entries are whole numbers (label indices); strings, None, NaN and fractions are not."""
    out = np.zeros(len(values), bool)
    for i, v in enumerate(values):
        try:
            out[i] = not isinstance(v, (str, bytes, bool)) and float(v) == int(v)
        except (TypeError, ValueError, OverflowError):
            out[i] = False
    return out


def _flat(lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row index, label index) of every entry of a column of per-row label lists."""
    lengths = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(lists))
    if not lengths.sum():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows = np.repeat(np.arange(len(lists)), lengths)
    return rows, np.concatenate([np.asarray(v, dtype=np.int64) for v in lists if len(v)])


def dense_targets(df: pd.DataFrame, num_labels: int, absent: str,
                  labels: Iterable[int] | None = None) -> np.ndarray:
    """Only the requested columns are allocated: [N, C'] stays small for a label subset of Open Images."""
    fill = NEGATIVE if absent == "negative" else UNKNOWN
    if labels is None:
        position = np.arange(num_labels)
        width = num_labels
    else:
        labels = np.asarray(list(labels), dtype=np.int64)
        unique, inverse = np.unique(labels, return_inverse=True)
        if len(unique) != len(labels):                  # a repeated column: build each once, then copy
            return dense_targets(df, num_labels, absent, unique)[:, inverse]
        position = np.full(num_labels, -1, np.int64)
        position[labels] = np.arange(len(labels))
        width = len(labels)
    full = np.full((len(df), width), fill, dtype=np.int8)
    for col, value in (("ignore", UNKNOWN), ("neg", NEGATIVE), ("pos", POSITIVE)):  # pos wins
        if col not in df:
            continue
        rows, cols = _flat(df[col].to_numpy())
        cols = position[cols]
        keep = cols >= 0
        full[rows[keep], cols[keep]] = value
    return full


def target_row(row: pd.Series | dict, num_labels: int, absent: str) -> np.ndarray:
    """The dense 1/0/-1 target of one manifest row (used per item by the dataset reader)."""
    t = np.full(num_labels, NEGATIVE if absent == "negative" else UNKNOWN, dtype=np.int8)
    for col, value in (("ignore", UNKNOWN), ("neg", NEGATIVE), ("pos", POSITIVE)):
        v = row.get(col) if isinstance(row, dict) else (row[col] if col in row else None)
        if v is not None and len(v):
            t[np.asarray(v, dtype=np.int64)] = value
    return t
