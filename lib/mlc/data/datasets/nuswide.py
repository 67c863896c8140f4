"""NUS-WIDE: the 81-concept closed-set benchmark and the 925 seen / 81 unseen open-vocabulary split.

Images live at ``<raw>/Flickr/<concept folder>/<file>.jpg``.  NUS-WIDE downloads are often incomplete:
missing images are counted and listed in ``<manifest>/missing_images.txt`` and dropped, unless
``strict=True`` makes the first one an error.

- ``nuswide81``: ``ImageList/{Imagelist,TrainImagelist,TestImagelist}.txt``, ``Concepts81.txt``,
  ``Groundtruth/AllLabels/Labels_<concept>.txt`` (one 0/1 per line over Imagelist.txt); images without
  positives dropped; 81 labels in Concepts81 order.
- ``nuswide_zsl`` (LESA/BiAM protocol, used by MKT and QKS): 925 seen labels (the 1k Flickr tags minus
  the 81 concepts) and the 81 concepts unseen.  Train: seen positives only, images without a seen tag
  dropped.  Test: seen and unseen positives, images without any positive dropped.  Every other cell is
  a known negative.  Two on-disk layouts give the same manifest:
  ``layout="qks"``: ``NUS_WID_Tags/{Train,Test}_Tags1k.dat``, ``NUS_WID_Tags/TagList1k.txt``,
  ``Concepts81.txt``, ``Groundtruth/TrainTestLabels/Labels_<concept>_Test.txt``,
``ImageList/{Train,Test}Imagelist.txt``;
  ``layout="mkt"``: ``features/nus_wide_{train,test}.h5`` (``<name>-labels``: 925 / 1006 columns of +1 / -1 / 0),
  ``img_names.pkl``, ``test_img_names.pkl``, ``Concepts925.txt``, ``Concepts81.txt`` (0 = unknown).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from mlc.core.safe_load import load_pickle
from mlc.data.datasets.common import (
    DatasetFormatError,
    dense_to_lists,
    read_binary_column,
    read_binary_matrix,
    read_lines,
    report_missing,
    require,
)
from mlc.data.datasets.registry import register_converter
from mlc.data.manifest import Label, write_manifest


def image_path(listed: str) -> str:
    """``C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg`` or ``actor\\0001_...jpg``
    -> ``Flickr/actor/0001_...jpg``."""
    parts = listed.replace("\\", "/").split("/")
    if len(parts) < 2:
        raise ValueError(listed)
    return f"Flickr/{parts[-2]}/{parts[-1]}"


def mkt_image_path(name: str) -> str:
    """MKT's flattened names: ``actor_0001_2124494179.jpg`` -> ``Flickr/actor/0001_2124494179.jpg``
    (the last two ``_`` pieces are the file name; folder names may contain ``_``)."""
    pieces = name.split("_")
    if len(pieces) < 3:
        raise ValueError(name)
    return f"Flickr/{'_'.join(pieces[:-2])}/{'_'.join(pieces[-2:])}"


def _image_list(path: Path) -> list[str]:
    out = []
    for i, line in enumerate(read_lines(path, skip_empty=False)):
        if not line:
            continue
        try:
            out.append(image_path(line))
        except ValueError:
            raise DatasetFormatError(f"{path}:{i + 1}: expected a path '<folder>\\<file>.jpg', got {line!r}") from None
    return out


def _drop_missing(raw: Path, out_dir: Path, frames: dict[str, pd.DataFrame], strict: bool, what: str):
    missing = [r for df in frames.values() for r in df["image"] if not (raw / r).is_file()]
    report_missing(out_dir, missing, strict, what, raw)
    gone = set(missing)
    return {k: df[~df["image"].isin(gone)].reset_index(drop=True) for k, df in frames.items()}, len(missing)


@register_converter("nuswide81")
def convert_nuswide81(raw_root, out_dir, strict: bool = False):
    """NUS-WIDE with the 81 concepts: ``raw_root`` holds ImageList/, Groundtruth/ and Concepts81.txt."""
    raw, out_dir = Path(raw_root), Path(out_dir)
    concepts = read_lines(raw / "Concepts81.txt")
    if len(set(concepts)) != len(concepts):
        raise DatasetFormatError(f"{raw / 'Concepts81.txt'}: concept names repeat")
    all_images = _image_list(raw / "ImageList" / "Imagelist.txt")
    gt = np.stack([read_binary_column(raw / "Groundtruth" / "AllLabels" / f"Labels_{c}.txt", len(all_images))
                   for c in concepts], axis=1)                              # [N, 81]
    row_of = {p: i for i, p in enumerate(all_images)}
    frames = {}
    for split, list_name in (("train", "TrainImagelist.txt"), ("test", "TestImagelist.txt")):
        path = raw / "ImageList" / list_name
        members = _image_list(path)
        unknown = [m for m in members if m not in row_of]
        if unknown:
            raise DatasetFormatError(f"{path}: image {unknown[0]} is not in Imagelist.txt")
        rows = np.array([row_of[m] for m in members], np.int64)
        sub = gt[rows]
        keep = sub.any(1)
        frames[split] = pd.DataFrame({"image": np.array(members, dtype=object)[keep],
                                      "pos": dense_to_lists(sub[keep])})
    frames, n_missing = _drop_missing(raw, out_dir, frames, strict, "NUS-WIDE")
    labels = [Label(i, c, c) for i, c in enumerate(concepts)]
    return write_manifest(out_dir, name="nuswide81", labels=labels, splits=frames, image_root=str(raw.resolve()),
                          absent="negative", extra={"source": "nuswide81", "missing_images": n_missing})


def _zsl_frames(train_paths, train_seen, test_paths, test_seen, test_unseen, train_known=None, test_known=None):
    """Dense 0/1 (and optional known masks) -> manifest rows with the protocol's filtering."""
    n_seen = train_seen.shape[1]
    frames = {}
    keep = train_seen.any(1)
    train = pd.DataFrame({"image": np.asarray(train_paths, dtype=object)[keep],
                          "pos": dense_to_lists(train_seen[keep])})
    if train_known is not None:
        train["ignore"] = dense_to_lists(~train_known[keep])
    frames["train"] = train
    both = np.concatenate([test_seen, test_unseen], axis=1)
    keep = both.any(1)
    test = pd.DataFrame({"image": np.asarray(test_paths, dtype=object)[keep], "pos": dense_to_lists(both[keep])})
    if test_known is not None:
        test["ignore"] = dense_to_lists(~test_known[keep])
    frames["test"] = test
    return frames, n_seen


def _read_qks(raw: Path):
    tags = read_lines(raw / "NUS_WID_Tags" / "TagList1k.txt")
    concepts = read_lines(raw / "Concepts81.txt")
    unseen_set = set(concepts)
    seen_cols = [i for i, t in enumerate(tags) if t not in unseen_set]
    seen = [tags[i] for i in seen_cols]
    train_paths = _image_list(raw / "ImageList" / "TrainImagelist.txt")
    test_paths = _image_list(raw / "ImageList" / "TestImagelist.txt")
    train_tags = read_binary_matrix(raw / "NUS_WID_Tags" / "Train_Tags1k.dat", len(tags))
    test_tags = read_binary_matrix(raw / "NUS_WID_Tags" / "Test_Tags1k.dat", len(tags))
    for paths, m, name in ((train_paths, train_tags, "Train"), (test_paths, test_tags, "Test")):
        if len(paths) != len(m):
            raise DatasetFormatError(f"{raw / 'NUS_WID_Tags' / f'{name}_Tags1k.dat'}: {len(m)} rows, but "
                                     f"{name}Imagelist.txt lists {len(paths)} images")
    test_unseen = np.stack([read_binary_column(raw / "Groundtruth" / "TrainTestLabels" / f"Labels_{c}_Test.txt",
                                               len(test_paths)) for c in concepts], axis=1)
    frames, _ = _zsl_frames(train_paths, train_tags[:, seen_cols], test_paths, test_tags[:, seen_cols], test_unseen)
    return seen, concepts, frames


def _read_h5_labels(path: Path, names: list[str], width: int) -> np.ndarray:
    import h5py
    require(path)
    out = np.zeros((len(names), width), np.int8)
    try:
        with h5py.File(path, "r") as f:
            for i, name in enumerate(names):
                key = f"{name}-labels"
                if key not in f:
                    raise DatasetFormatError(f"{path}: no dataset {key!r} (image {i} of the name list)")
                row = np.asarray(f[key]).reshape(-1)
                if row.shape[0] != width:
                    raise DatasetFormatError(f"{path}: {key!r} has {row.shape[0]} values, expected {width}")
                out[i] = row
    except OSError as e:
        raise DatasetFormatError(f"{path}: not a readable HDF5 file ({e})") from None
    return out


def _read_names(path: Path) -> list[str]:
    require(path)
    try:
        obj = load_pickle(path)
        names = obj["img_names"] if isinstance(obj, dict) else obj
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError) as e:
        raise DatasetFormatError(f"{path}: expected a pickled {{'img_names': [...]}} ({e!r})") from None


def _read_mkt(raw: Path):
    seen = read_lines(raw / "Concepts925.txt")
    concepts = read_lines(raw / "Concepts81.txt")
    train_names = _read_names(raw / "img_names.pkl")
    test_names = _read_names(raw / "test_img_names.pkl")
    train = _read_h5_labels(raw / "features" / "nus_wide_train.h5", train_names, len(seen))
    test = _read_h5_labels(raw / "features" / "nus_wide_test.h5", test_names, len(seen) + len(concepts))
    frames, _ = _zsl_frames([mkt_image_path(n) for n in train_names], (train == 1).astype(np.uint8),
                            [mkt_image_path(n) for n in test_names], (test[:, :len(seen)] == 1).astype(np.uint8),
                            (test[:, len(seen):] == 1).astype(np.uint8), train_known=train != 0,
                            test_known=test != 0)
    for split in frames:                      # no unknown cells: keep the two layouts' manifests identical
        if frames[split]["ignore"].map(len).sum() == 0:
            frames[split] = frames[split].drop(columns="ignore")
    return seen, concepts, frames


@register_converter("nuswide_zsl")
def convert_nuswide_zsl(raw_root, out_dir, layout: str = "qks", strict: bool = False):
    """NUS-WIDE zero-shot split (925 seen / 81 unseen) from the QKS or the MKT layout (same manifest)."""
    raw, out_dir = Path(raw_root), Path(out_dir)
    if layout not in ("qks", "mkt"):
        raise ValueError(f"layout must be 'qks' or 'mkt', got {layout!r}")
    seen, unseen, frames = _read_qks(raw) if layout == "qks" else _read_mkt(raw)
    frames, n_missing = _drop_missing(raw, out_dir, frames, strict, "NUS-WIDE")
    labels = [Label(i, n, n, True) for i, n in enumerate(seen)] + \
             [Label(len(seen) + i, n, n, False) for i, n in enumerate(unseen)]
    return write_manifest(out_dir, name="nuswide_zsl", labels=labels, splits=frames, image_root=str(raw.resolve()),
                          absent="negative", extra={"source": "nuswide_zsl", "missing_images": n_missing})
