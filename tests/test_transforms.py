import random

import numpy as np
import pytest
from PIL import Image

from mlc.config.params import InputParams
from mlc.data import transforms as T


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


@pytest.fixture(scope="module")
def package():
    """PyPI ``randaugment==1.0.2`` itself (a test dependency); it calls ``np.int``, gone since NumPy 1.24."""
    if not hasattr(np, "int"):
        np.int = int            # the shim the package needs on a current NumPy
    from randaugment import randaugment as ra
    return ra


def _photo(size=96):
    """A smooth image with structure (so that resampling and fills show), not noise."""
    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([(x * 255 // size), (y * 255 // size), ((x + y) * 127 // size)], -1).astype(np.uint8)
    rgb[size // 3: size // 2, size // 4: size // 2] = (240, 30, 30)
    return Image.fromarray(rgb)


@pytest.mark.parametrize("op", T.OfficialRandAugment.ops)
def test_each_official_op_equals_the_package_at_every_magnitude(package, op):
    img = _photo()
    for m in range(1, 10):
        for seed in range(3):
            random.seed(seed)
            np.random.seed(seed)
            theirs = package.SubPolicy(1.0, op, m, 0.0, op, m)(img)      # draws random() for p1, then the op
            random.seed(seed)
            np.random.seed(seed)
            random.random()
            mine = T.apply_op(img, op, m)
            assert mine.size == theirs.size
            assert np.array_equal(np.asarray(mine.convert("RGB")), np.asarray(theirs.convert("RGB"))), (op, m, seed)


def test_the_whole_policy_equals_the_package_draw_for_draw(package):
    img = _photo()
    theirs_policy, mine_policy = package.RandAugment(), T.OfficialRandAugment()
    for seed in range(150):
        random.seed(seed)
        np.random.seed(seed)
        theirs = np.asarray(theirs_policy(img).convert("RGB"))
        random.seed(seed)
        np.random.seed(seed)
        mine = np.asarray(mine_policy(img))
        assert np.array_equal(mine, theirs), seed


def test_fixed_differences_rotation_fill_translation_resampling_and_cutout_size():
    img = Image.new("RGB", (64, 64), (255, 255, 255))
    rotated = np.asarray(T.apply_op(img, "Rotate", 9))
    assert tuple(rotated[0, 0]) == (128, 128, 128)                       # grey corners, not black
    random.seed(1)
    shifted = np.asarray(T.apply_op(_photo(64), "TranslateX", 5))
    values = set(map(tuple, np.asarray(_photo(64)).reshape(-1, 3))) | {(128, 128, 128)}
    assert set(map(tuple, shifted.reshape(-1, 3))) <= values              # whole-pixel shifts: no new colours
    np.random.seed(0)
    black = Image.new("RGB", (400, 400))
    for _ in range(5):
        hole = np.asarray(T.apply_op(black, "Cutout", 9)).any(-1)
        assert hole.sum() <= 400                                          # at most 20 x 20, as the package


def test_mkt_paper_config_trains_with_timms_official_pipeline():
    """MKT's utils/transforms.py: timm create_transform(224, rand-m9-mstd0.5-inc1, bicubic, no colour jitter,
    no random erasing); evaluation: resize 256 + centre crop 224 (bicubic); ImageNet mean/std."""
    from conftest import ROOT

    from mlc.config.params import load_params
    params = load_params(ROOT / "params" / "mkt" / "nuswide_vitb16.yaml")
    for method in ("mkt", "mkt_prompt"):
        inp = params.methods[method].input
        train = [type(t).__name__ for t in T.build_transform(inp, train=True).transforms]
        assert train == ["RandomResizedCropAndInterpolation", "RandomHorizontalFlip", "RandAugment", "MaybeToTensor",
                         "Normalize"]
        tf = T.build_transform(inp, train=True).transforms
        assert tf[0].scale == (0.08, 1.0) and tf[1].p == 0.5
        ra = tf[2]
        assert ra.num_layers == 2 and {op.magnitude for op in ra.ops} == {9}
        assert {op.magnitude_std for op in ra.ops} == {0.5}
        assert "SolarizeIncreasing" in {op.name for op in ra.ops}                     # the "inc1" op set
        assert tuple(round(float(v), 3) for v in tf[4].mean) == (0.485, 0.456, 0.406)
        ev = T.build_transform(inp, train=False).transforms
        assert [type(t).__name__ for t in ev][:2] == ["Resize", "CenterCrop"] and ev[0].size == 256
        assert T.build_transform(inp, train=True)(_photo(300)).shape == (3, 224, 224)
    with pytest.raises(ValueError, match="timm_augment replaces hflip"):
        T.build_transform(InputParams(timm_augment="rand-m9-mstd0.5-inc1", hflip=True), train=True)


def test_timm_posterize_at_zero_bits_gives_a_black_image_as_old_pillow_did():
    """MKT's rand-m9-mstd0.5-inc1 can draw 0 bits to keep; Pillow >= 11 raises there, which killed loader workers."""
    import numpy as np
    from PIL import Image

    from mlc.config.params import InputParams
    from mlc.data.transforms import build_transform
    tf = build_transform(InputParams(image_size=32, normalize="imagenet", timm_augment="rand-m9-mstd0.5-inc1"), True)
    ops = [op for step in tf.transforms for op in getattr(step, "ops", []) if op.name.startswith("Posterize")]
    assert ops
    img = Image.fromarray(np.full((8, 8, 3), 200, np.uint8))
    assert np.asarray(ops[0].aug_fn(img, 0)).max() == 0
    assert np.asarray(ops[0].aug_fn(img, 8)).min() == 200
    assert np.asarray(ops[0].aug_fn(img, 2)).max() == 192
