"""A prepared image cache: every image of a split resized once to the training resolution and stored as
uint8 pixels in one memory-mapped file, ``<manifest>/cache/<split>-<S>.u8.npy`` ([N, S, S, 3]).

The kit's transforms begin with the deterministic ``Resize((S, S))`` (as the official Q2L, SALGL, SGRE
and QKS pipelines do), so a cached image is the very image the resize would make: reading it skips the
JPEG decode and the resize, and every random augmentation after it sees the same pixels (PIL's resize
to the size an image already has is a copy).  The cache is built once, in parallel loader workers,
under a file lock (several processes or jobs wait for the first), written atomically (``io.atomic_write``),
and checked against the split's image list on every use.  Size: N x S x S x 3 bytes (COCO
2014 train at 448: 82,783 x 602 KB = 50 GB); the free space is checked before building.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from mlc.core.io import atomic_write, atomic_write_text, exclusive
from mlc.core.progress import bar as progress_bar


class CacheError(RuntimeError):
    """The image cache cannot be built or does not match its split."""


# the decoding the cached pixels come from: a change to it (16-bit PNGs scaled, not clipped) rebuilds old caches
DECODING = "v2"


def _file_state(path: Path) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _identity(dataset, size: int) -> str:
    """What determines the cached pixels: the size, the decoding, and each image's path, byte size and
    modification time (an image rewritten in place makes another cache)."""
    listing = "\n".join(f"{p}\t{_file_state(p)}" for p in (dataset.image_path(i) for i in range(len(dataset))))
    return hashlib.sha256(f"{size}\n{DECODING}\n{listing}".encode()).hexdigest()[:16]


def _meta_identity(meta_path: Path) -> str | None:
    try:
        return json.loads(meta_path.read_text()).get("identity")
    except (OSError, ValueError, AttributeError):
        return None


def _intact(path: Path, n: int, size: int) -> bool:
    """Whether the cache file maps as the uint8 array it must be (a truncated or foreign file is rebuilt)."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return array.dtype == np.uint8 and array.shape == (n, size, size, 3)


def cache_path(dataset, size: int) -> Path:
    """Where the cache of the dataset's split at ``size`` lives."""
    return dataset.manifest.root / "cache" / f"{dataset.split_name}-{size}.u8.npy"


class _Resized(torch.utils.data.Dataset):
    def __init__(self, dataset, size: int):
        import torchvision.transforms as T
        self.dataset, self.resize = dataset, T.Resize((size, size))

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return torch.from_numpy(np.asarray(self.resize(self.dataset.load_image(i)), dtype=np.uint8).copy())


def build_cache(dataset, size: int, num_workers: int = 0, progress: bool = True) -> Path:
    """The split's cache at ``size`` (built now if missing or stale); its path."""
    path = cache_path(dataset, size)
    meta_path = path.with_suffix(".json")
    identity = _identity(dataset, size)
    with exclusive(path.with_name(f".{path.name}.lock"), f"caching {dataset.split_name} images at {size} px"):
        if path.is_file() and meta_path.is_file() and _meta_identity(meta_path) == identity and \
                _intact(path, len(dataset), size):
            return path
        need = len(dataset) * size * size * 3
        path.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path.parent).free
        if need > free:
            raise CacheError(f"{path}: the image cache needs {need / 2**30:.1f} GiB, {path.parent} has "
                             f"{free / 2**30:.1f} GiB free; free space or set data.image_cache: none")
        def write(tmp: Path) -> None:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(dataset), size, size, 3))
            loader = torch.utils.data.DataLoader(_Resized(dataset, size), batch_size=32, num_workers=num_workers)
            start = 0
            for batch in progress_bar(loader, desc=f"caching {dataset.split_name} at {size} px",
                                      disable=not progress):
                out[start:start + len(batch)] = batch.numpy()
                start += len(batch)
            out.flush()
            del out
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())

        atomic_write(path, write)
        atomic_write_text(meta_path, json.dumps({"identity": identity, "size": size, "images": len(dataset),
                                                 "split": dataset.split_name}))
        return path


class CachedImages:
    """Read access to a cache file (opened lazily, so that each loader worker maps it itself)."""

    def __init__(self, path: Path, n: int, size: int):
        self.path, self.n, self.size, self._array = Path(path), n, size, None

    def __getstate__(self):
        return {**self.__dict__, "_array": None}

    def image(self, i: int):
        """Item ``i`` as a PIL image of size x size."""
        from PIL import Image
        if self._array is None:
            try:
                self._array = np.load(self.path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise CacheError(f"{self.path}: the image cache is not readable ({e}); delete it to rebuild") from None
            if self._array.dtype != np.uint8 or self._array.shape != (self.n, self.size, self.size, 3):
                raise CacheError(f"{self.path}: holds {self._array.dtype} {self._array.shape}, expected uint8 "
                                 f"({self.n}, {self.size}, {self.size}, 3); delete it to rebuild")
        return Image.fromarray(np.asarray(self._array[i]))


def attach_cache(dataset, size: int, num_workers: int = 0, progress: bool = True) -> Path:
    """Build (if needed) and use the cache for ``dataset``: its images are read from it from now on."""
    path = build_cache(dataset, size, num_workers, progress)
    dataset.cache = CachedImages(path, len(dataset), size)
    return path
