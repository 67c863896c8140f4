"""The data switches that must change no number: uint8 batches normalised on the device, the resized-image
cache, persistent workers with per-image augmentation seeds."""
import json

import numpy as np
import pytest
import torch
from conftest import toy_params_file

from mlc.config.params import InputParams
from mlc.data.dataset import MultiLabelDataset
from mlc.data.image_cache import CacheError, attach_cache, cache_path
from mlc.data.transforms import NORMALIZE, build_transform, normalize_batch


def _q2l_input(size=48):
    return InputParams(image_size=size, normalize="imagenet", cutout_factor=0.5, randaugment="official")


@pytest.mark.parametrize("train", [True, False])
def test_uint8_batches_normalised_on_the_device_equal_the_float_pipeline(tiny_world, train):
    inp = _q2l_input()
    plain = MultiLabelDataset(tiny_world, "train", build_transform(inp, train))
    fast = MultiLabelDataset(tiny_world, "train", build_transform(inp, train, uint8=True))
    a = torch.stack([plain[(i, 7)]["image"] for i in range(6)])
    raw = torch.stack([fast[(i, 7)]["image"] for i in range(6)])
    assert raw.dtype == torch.uint8
    assert torch.equal(normalize_batch(raw, *NORMALIZE["imagenet"]), a)


def test_the_image_cache_gives_the_same_images_and_is_checked(tiny_world, tmp_path, monkeypatch):
    import shutil
    world = tmp_path / "world"
    shutil.copytree(tiny_world.root, world)
    from mlc.data.manifest import Manifest
    manifest = Manifest(world)
    inp = _q2l_input()
    plain = MultiLabelDataset(manifest, "train", build_transform(inp, True))
    cached = MultiLabelDataset(manifest, "train", build_transform(inp, True))
    path = attach_cache(cached, inp.image_size, progress=False)
    assert path == cache_path(cached, 48) and np.load(path, mmap_mode="r").shape == (len(plain), 48, 48, 3)
    for i in range(len(plain)):
        assert torch.equal(plain[(i, 3)]["image"], cached[(i, 3)]["image"])      # same pixels, same augmentation
    stamp = path.stat().st_mtime_ns
    attach_cache(cached, 48, progress=False)
    assert path.stat().st_mtime_ns == stamp                                    # reused, not rebuilt
    other = MultiLabelDataset(manifest, "train", build_transform(inp, True))
    other._records = other._records[:5]                                        # another image list: rebuilt
    attach_cache(other, 48, progress=False)
    assert np.load(path, mmap_mode="r").shape[0] == 5
    import shutil as sh
    monkeypatch.setattr(sh, "disk_usage", lambda p: type("U", (), {"free": 10})())
    with pytest.raises(CacheError, match=r"needs .* GiB, .* has 0.0 GiB free; free space or set data.image_cache"):
        attach_cache(plain, 64, progress=False)


def test_an_image_rewritten_in_place_is_not_served_from_a_stale_cache(tiny_world, tmp_path):
    """The cache was keyed on the image paths only: after a split's images were rewritten in place it served the
    old pixels (retraining bit-identical to before).  Its key now holds each file's size and modification time."""
    import os
    import shutil

    from PIL import Image

    from mlc.data.manifest import Manifest
    world = tmp_path / "world"
    shutil.copytree(tiny_world.root, world)
    manifest = Manifest(world)
    inp = _q2l_input()
    cached = MultiLabelDataset(manifest, "train", build_transform(inp, False))
    path = attach_cache(cached, 48, progress=False)
    before = np.load(path)[0].copy()
    image = cached.image_path(0)
    Image.new("RGB", Image.open(image).size, (255, 0, 0)).save(image)     # the same path, other pixels
    st = os.stat(image)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))         # a later time, whatever the clock did
    fresh = MultiLabelDataset(manifest, "train", build_transform(inp, False))
    attach_cache(fresh, 48, progress=False)
    after = np.load(path)[0]
    assert not np.array_equal(after, before) and (after[..., 0] == 255).all() and (after[..., 1:] == 0).all()


@pytest.mark.slow
def test_training_with_every_data_switch_gives_the_same_numbers(tmp_path):
    """image_cache + uint8 batches + 2 persistent workers against the plain float pipeline in one process."""
    from conftest import train_subprocess
    runs = {}
    for name, data in (("plain", {"uint8_batches": "false", "image_cache": "none", "num_workers": 0}),
                       ("fast", {"uint8_batches": "true", "image_cache": "uint8", "num_workers": 2})):
        pf = toy_params_file(tmp_path, name, "epochs: 2, batch_size: 16")
        settings = "".join(f"  {k}: {v}\n" for k, v in data.items())
        pf.write_text(pf.read_text().replace("data:\n", "data:\n" + settings, 1))
        done = train_subprocess(pf)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[name] = json.loads((tmp_path / name / "rel" / "q2l" / "result.json").read_text())
    assert len(list((tmp_path / "world").rglob("*.u8.npy"))) == 3        # train, val, test
    assert [r["train_loss"] for r in runs["fast"]["history"]] == [r["train_loss"] for r in runs["plain"]["history"]]
    assert runs["fast"]["test"]["mAP"] == runs["plain"]["test"]["mAP"]


def test_a_truncated_or_foreign_cache_file_is_rebuilt(tiny_world, tmp_path):
    """A truncated or object-dtype cache .npy gave a raw numpy error; it is rebuilt (and a reader of a cache that
    breaks after it was built names the file)."""
    import shutil

    from mlc.data.image_cache import CachedImages
    from mlc.data.manifest import Manifest
    world = tmp_path / "world"
    shutil.copytree(tiny_world.root, world)
    manifest = Manifest(world)
    ds = MultiLabelDataset(manifest, "train", build_transform(_q2l_input(), False))
    path = attach_cache(ds, 48, progress=False)
    good = np.load(path)
    path.write_bytes(path.read_bytes()[:200])                                   # truncated
    attach_cache(MultiLabelDataset(manifest, "train", build_transform(_q2l_input(), False)), 48, progress=False)
    np.testing.assert_array_equal(np.load(path), good)
    np.save(path, np.array([{"not": "pixels"}], dtype=object), allow_pickle=True)   # another kind of file
    attach_cache(MultiLabelDataset(manifest, "train", build_transform(_q2l_input(), False)), 48, progress=False)
    np.testing.assert_array_equal(np.load(path), good)
    path.write_bytes(b"broken after it was built")
    with pytest.raises(CacheError, match=r"u8.npy: the image cache is not readable .* delete it to rebuild"):
        CachedImages(path, len(ds), 48).image(0)
