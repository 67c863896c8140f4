"""Torch dataset over a manifest split."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .manifest import Manifest, target_row


class ImageError(OSError):
    """An image listed in a manifest is missing or cannot be decoded; the message names both."""


class MultiLabelDataset(Dataset):
    """Items are dicts ``{"image": Tensor, "target": float Tensor [C'] of 1/0/-1, "index": int}``.

    ``labels``: label indices to keep, in order (e.g. the seen labels for open-vocabulary training);
    all labels by default.
    """

    def __init__(self, manifest: Manifest, split: str, transform=None, labels=None):
        self.manifest, self.split_name, self.transform = manifest, split, transform
        self.rows = manifest.split(split)
        self.labels = np.arange(manifest.num_labels) if labels is None else np.asarray(labels, dtype=np.int64)
        self._absent = manifest.meta["absent"]
        self._records = self.rows.to_dict("records")

    def __len__(self) -> int:
        return len(self._records)

    def load_image(self, i: int) -> Image.Image:
        rel = self._records[i]["image"]
        path = self.manifest.image_root / rel
        where = f"(listed in {self.manifest.root / (self.split_name + '.parquet')}, row {i})"
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except FileNotFoundError:
            raise ImageError(f"{path}: image not found {where}") from None
        except (UnidentifiedImageError, OSError) as e:
            raise ImageError(f"{path}: cannot decode image {where}: {e}") from None

    def targets(self) -> np.ndarray:
        """All targets of the split, [N, C'] int8."""
        return self.manifest.dense_targets(self.split_name, self.labels)

    def __getitem__(self, i: int) -> dict:
        img = self.load_image(i)
        if self.transform is not None:
            img = self.transform(img)
        target = target_row(self._records[i], self.manifest.num_labels, self._absent)[self.labels]
        return {"image": img, "target": torch.from_numpy(target.astype(np.float32)), "index": i}
