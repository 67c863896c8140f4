"""Helpers shared by the converters: reading with errors that name the file and line, grouping labels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mlc.core.io import atomic_write_text


class DatasetFormatError(ValueError):
    """A raw dataset file is missing or malformed; the message names the file (and line)."""


def require(path: Path, what: str = "file") -> Path:
    """``path`` if it exists, else a :class:`DatasetFormatError` naming it."""
    path = Path(path)
    if not path.exists():
        raise DatasetFormatError(f"{path}: {what} not found")
    return path


def read_lines(path: Path, skip_empty: bool = True) -> list[str]:
    """Lines of a text file, stripped (CRLF too); a missing or undecodable file is a clear error."""
    path = require(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DatasetFormatError(f"{path}:{line}: not UTF-8 text ({e.reason})") from None
    lines = [l.strip() for l in text.splitlines()]
    return [l for l in lines if l] if skip_empty else lines


def read_json(path: Path, expect: type | None = None, what: str = ""):
    """A JSON file; ``expect`` (dict or list) is the type its top level must have."""
    path = require(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DatasetFormatError(f"{path}:{line}: not UTF-8 text ({e.reason})") from None
    if expect is not None and not isinstance(data, expect):
        kind = {dict: "an object ({...})", list: "a list ([...])"}.get(expect, expect.__name__)
        raise DatasetFormatError(f"{path}: the top level must be {kind}{' ' + what if what else ''}, "
                                 f"not {type(data).__name__}")
    return data


def read_binary_column(path: Path, n_expected: int | None = None) -> np.ndarray:
    """A file of one 0/1 value per line (NUS-WIDE ground truth) as uint8; a bad line is named."""
    lines = read_lines(path, skip_empty=False)
    while lines and lines[-1] == "":
        lines.pop()
    values = np.empty(len(lines), np.uint8)
    for i, l in enumerate(lines):
        if l not in ("0", "1"):
            raise DatasetFormatError(f"{path}:{i + 1}: expected 0 or 1, got {l!r}")
        values[i] = l == "1"
    if n_expected is not None and len(values) != n_expected:
        raise DatasetFormatError(f"{path}: {len(values)} lines, expected {n_expected} (one per image of the list)")
    return values


def read_binary_matrix(path: Path, n_cols: int) -> np.ndarray:
    """A whitespace-separated 0/1 matrix (NUS-WIDE ``*_Tags1k.dat``), rows = images."""
    path = require(path)
    try:
        df = pd.read_csv(path, sep=r"\s+", header=None, dtype=np.int64, engine="c")
    except (ValueError, pd.errors.ParserError) as e:
        raise DatasetFormatError(f"{path}: not a whitespace-separated integer matrix ({e})") from None
    if df.shape[1] != n_cols:
        raise DatasetFormatError(f"{path}: {df.shape[1]} columns, expected {n_cols}")
    bad = ~df.isin([0, 1]).all(axis=1).to_numpy()
    if bad.any():
        raise DatasetFormatError(f"{path}:{int(np.argmax(bad)) + 1}: values other than 0 and 1")
    return df.to_numpy(np.uint8)


def dense_to_lists(matrix: np.ndarray) -> list[np.ndarray]:
    """Per row, the column indices of its non-zero entries."""
    rows, cols = np.nonzero(matrix)
    return group_lists(rows, cols, matrix.shape[0])


def group_lists(row: np.ndarray, col: np.ndarray, n_rows: int) -> list[np.ndarray]:
    """Sorted unique ``col`` values per ``row`` (vectorised: one sort, one split), as int32 arrays."""
    row = np.asarray(row, np.int64)
    col = np.asarray(col, np.int64)
    if len(row):
        key = np.unique(row * (int(col.max()) + 1) + col)
        width = int(col.max()) + 1
        row, col = key // width, key % width
    counts = np.bincount(row, minlength=n_rows)
    return np.split(col.astype(np.int32), np.cumsum(counts)[:-1])


def report_missing(out_dir: Path, missing: list[str], strict: bool, dataset: str, image_root: Path) -> None:
    """Write ``missing_images.txt``; with ``strict`` a missing image is an error instead."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "missing_images.txt", "".join(m + "\n" for m in missing))
    if missing and strict:
        raise DatasetFormatError(f"{image_root}: {len(missing)} images of {dataset} are missing, e.g. "
                                 f"{missing[0]} (list in {out_dir / 'missing_images.txt'})")
