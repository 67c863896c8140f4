"""Torch dataset over a manifest split."""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from mlc.core.progress import bar as progress_bar
from mlc.data.manifest import Manifest, ManifestError, target_row


def to_rgb(img: Image.Image) -> Image.Image:
    """An image as 8-bit RGB.  16-bit and 32-bit greyscale (PNG ``I;16``, ``I``) and float (``F``) images are
    scaled to 0..255 first: Pillow's own conversion clips them, which turns a 16-bit PNG white."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(img, dtype=np.float64)
        # a PNG in mode I is 16-bit greyscale whatever its values: a dark one must stay dark, not be stretched
        sixteen_bit = img.mode.startswith("I;16") or (img.mode == "I" and img.format == "PNG")
        top = 65535.0 if sixteen_bit or values.max(initial=0) > 255 else 255.0
        if img.mode == "F":
            top = 1.0 if values.max(initial=0) <= 1.0 else top
        img = Image.fromarray(np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8), mode="L")
    return img.convert("RGB")


class ImageError(OSError):
    """An image listed in a manifest is missing or cannot be decoded; the message names both."""


def escaping_paths(images: pd.Series) -> np.ndarray:
    """Rows whose image path is absolute or climbs out of the image root with ``..`` (vectorised)."""
    s = images.astype(str).str.replace("\\", "/", regex=False)
    return (s.str.startswith("/") | s.str.match(r"^[A-Za-z]:/") | s.str.contains(r"(?:^|/)\.\.(?:/|$)")).to_numpy()


@contextlib.contextmanager
def _seeded(seed: int):
    """Run the block with torch's CPU stream and Python's ``random`` seeded from ``seed``, then restore both
    (model code in the same process, e.g. dropout, keeps its own stream).  numpy's legacy global stream is
    seeded but not restored: nothing in training draws from it, and restoring it costs more than the rest
    (see benchmarks/augment_seeding.py)."""
    gen = torch.default_generator
    torch_state, py_state = gen.get_state(), random.getstate()
    gen.manual_seed(seed)                 # not torch.manual_seed: it also seeds every accelerator, ~100x slower
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        gen.set_state(torch_state)
        random.setstate(py_state)


class MultiLabelDataset(Dataset):
    """Items are dicts ``{"image": Tensor, "target": float Tensor [C'] of 1/0/-1, "index": int}``.

    ``labels``: label indices to keep, in order (e.g. the seen labels for open-vocabulary training);
    all labels by default.

    Image paths are relative to the manifest's image root and may not leave it (no absolute path, no
    ``..``) unless the manifest's meta says ``"absolute_paths": true``.

    An item is asked for by index (its transform draws from the process's random state) or, as the
    training sampler :class:`mlc.data.sampler.TrainSampler` does, by ``(index, epoch_seed)``: its random
    transform is then seeded from (epoch seed, index), so an epoch's augmentations do not depend on the
    number of loader workers or on which process loads an image.
    """

    def __init__(self, manifest: Manifest, split: str, transform=None, labels=None):
        self.manifest, self.split_name, self.transform = manifest, split, transform
        self.rows = manifest.split(split)
        self.labels = np.arange(manifest.num_labels) if labels is None else np.asarray(labels, dtype=np.int64)
        self._absent = manifest.meta["absent"]
        self._records = self.rows.to_dict("records")
        self.cache = None                   # mlc.data.image_cache.CachedImages: images resized once, read from it
        self.device_normalize = None        # (mean, std) when the transform returns uint8 (normalised on the device)
        if not manifest.meta.get("absolute_paths", False) and len(self.rows):
            bad = escaping_paths(self.rows["image"])
            if bad.any():
                i = int(np.argmax(bad))
                raise ManifestError(f"{self.parquet_path}: row {i} image {self.rows['image'].iloc[i]!r} is outside "
                                    f"the image root {manifest.image_root} ({int(bad.sum())} such rows); image paths "
                                    f"must be relative to it, or set \"absolute_paths\": true in "
                                    f"{manifest.root / 'meta.json'}")

    @property
    def parquet_path(self):
        """The split's parquet file (named in every error about a row)."""
        return self.manifest.root / f"{self.split_name}.parquet"

    def __len__(self) -> int:
        return len(self._records)

    def image_path(self, i: int):
        """Absolute path of item ``i``'s image."""
        return self.manifest.image_root / self._records[i]["image"]

    def load_image(self, i: int) -> Image.Image:
        """Item ``i``'s image as RGB; a missing or undecodable file is an :class:`ImageError` naming it and its row."""
        path = self.image_path(i)
        where = f"(listed in {self.parquet_path}, row {i})"
        try:
            with Image.open(path) as img:
                return to_rgb(img)
        except FileNotFoundError:
            raise ImageError(f"{path}: image not found {where}") from None
        except Image.DecompressionBombError as e:
            raise ImageError(f"{path}: refused, too many pixels to decode safely {where}: {e}") from None
        except (UnidentifiedImageError, OSError) as e:
            raise ImageError(f"{path}: cannot decode image {where}: {e}") from None

    def targets(self) -> np.ndarray:
        """All targets of the split, [N, C'] int8."""
        return self.manifest.dense_targets(self.split_name, self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        i, seed = key if isinstance(key, tuple) else (key, None)
        img = self.load_image(i) if self.cache is None else self.cache.image(i)
        if self.transform is not None:
            if seed is None:
                img = self.transform(img)
            else:
                with _seeded((seed * 1_000_003 + i) % 2**63):
                    img = self.transform(img)
        target = target_row(self._records[i], self.manifest.num_labels, self._absent)[self.labels]
        return {"image": img, "target": torch.from_numpy(target.astype(np.float32)), "index": i}


def missing_files(root, relative, desc: str = "", show_at: int | None = 20_000) -> list[int]:
    """Positions of the entries of ``relative`` with no file under ``root`` (one stat each; a progress bar
    from ``show_at`` entries on, none when it is None)."""
    it = range(len(relative))
    if show_at is not None and len(relative) >= show_at:
        it = progress_bar(it, desc=desc or "checking images", leave=False)
    return [i for i in it if not os.path.isfile(os.path.join(root, relative[i]))]


def check_images(ds: MultiLabelDataset, progress: bool = True, show_at: int = 20_000) -> None:
    """A fast stat pass over every image of a split before training: a missing file is an error that
    names how many are missing, the first few, and the manifest file (a progress bar on large splits)."""
    missing = missing_files(ds.manifest.image_root, [r["image"] for r in ds._records],
                            f"checking {ds.split_name} images", show_at if progress else None)
    if missing:
        first = ", ".join(f"row {i}: {ds.image_path(i)}" for i in missing[:3])
        raise ImageError(f"{ds.parquet_path}: {len(missing)} of {len(ds)} images of the {ds.split_name!r} split are "
                         f"missing ({first}{', ...' if len(missing) > 3 else ''}). Restore them, or convert the "
                         f"dataset again to drop them; data.check_images: false skips this check")
