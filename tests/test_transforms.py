import random

import numpy as np
import pytest
from mlc.data import transforms as T
from mlc.params import InputParams
from PIL import Image


def _image(size=64):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def test_cutout_draws_one_half_side_hole():
    random.seed(3)
    img = Image.new("RGB", (64, 64), (0, 0, 0))
    for _ in range(20):
        out = np.asarray(T.CutoutPIL(0.5)(img))
        changed = out.any(-1)
        if not changed.any():  # the random colour may be black: draw again
            continue
        ys, xs = np.nonzero(changed)
        assert ys.max() - ys.min() + 1 <= 33 and xs.max() - xs.min() + 1 <= 33
        assert changed.sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # one filled rectangle
    # a centred hole is 32 + 1 pixels wide (PIL rectangles include both ends), as ASL's CutoutPIL
    random.seed(0)
    big = np.asarray(T.CutoutPIL(0.5)(Image.new("RGB", (400, 400)))).any(-1)
    assert big.sum() > 0


@pytest.mark.parametrize("op", T.OfficialRandAugment.ops)
def test_every_official_randaugment_op_runs_and_keeps_the_size(op):
    magnitude_fn, fn = T._OPS[op]
    for m in (1, 9):
        out = fn(_image(), magnitude_fn(m))
        assert out.size == (64, 64) and out.mode == "RGB"


def test_policy_changes_images_and_transform_shapes():
    random.seed(0)
    img = _image()
    changed = sum(np.any(np.asarray(T.OfficialRandAugment()(img)) != np.asarray(img)) for _ in range(20))
    assert 5 <= changed <= 20  # each of 2 ops applies with p = 0.5 (some ops can leave an image unchanged)
    tf = T.build_transform(InputParams(image_size=32, hflip=True, cutout_factor=0.5, randaugment="official"), True)
    x = tf(_image(80))
    assert x.shape == (3, 32, 32)
    ev = T.build_transform(InputParams(image_size=32, normalize="clip", randaugment="official"), train=False)
    assert len(ev.transforms) == 3  # resize, tensor, normalise: no augmentation at evaluation
    back = T.denormalize(ev(_image())[None], "clip")
    assert float(back.min()) >= 0 and float(back.max()) <= 1
