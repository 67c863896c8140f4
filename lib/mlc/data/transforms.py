"""Image transforms: square resize, flip, ASL's CutoutPIL, RandAugment, normalisation presets.

RandAugment comes in two flavours (``InputParams.randaugment``):

* ``"official"``: a re-implementation of the policy of PyPI ``randaugment==1.0.2``, which Query2Label,
  SALGL and SGRE train with (that package calls ``np.int`` and no longer runs on NumPy >= 1.24):
  per image two (operation, magnitude 1..9) pairs drawn uniformly from 15 operations, each
  applied with probability 0.5; the same draws and pixels as the package (tests/test_transforms.py).
* ``"torchvision"``: ``torchvision.transforms.RandAugment()`` (2 ops, magnitude 9).
"""
from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from torchvision import transforms as T

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
NORMALIZE = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD), "none": ((0, 0, 0), (1, 1, 1))}


class CutoutPIL:
    """One square hole of side round(factor x image size), centred uniformly at random, clipped to the
    image and filled with one random RGB colour (ASL's ``CutoutPIL``, which Q2L meant to use)."""

    def __init__(self, factor: float = 0.5):
        self.factor = factor

    def __call__(self, img: Image.Image) -> Image.Image:
        """A copy of ``img`` with one cut-out square."""
        img = img.copy()
        w, h = img.size
        hole_h, hole_w = int(self.factor * h + 0.5), int(self.factor * w + 0.5)
        cy, cx = random.randint(0, h), random.randint(0, w)
        y0, y1 = max(cy - hole_h // 2, 0), min(cy + hole_h // 2, h)
        x0, x1 = max(cx - hole_w // 2, 0), min(cx + hole_w // 2, w)
        colour = (random.randint(0, 255), random.randint(0, 255), random.randint(0, 255))
        ImageDraw.Draw(img).rectangle([x0, y0, x1, y1], fill=colour)
        return img


def _sign() -> int:
    return random.choice((-1, 1))


def _affine(img, matrix, resample=Image.Resampling.BICUBIC):
    return img.transform(img.size, Image.Transform.AFFINE, matrix, resample, fillcolor=(128, 128, 128))


def _rotate_grey(img, degrees):
    """Counter-clockwise rotation; the corners it uncovers are grey (128), as the package fills them."""
    rotated = img.convert("RGBA").rotate(degrees)
    return Image.composite(rotated, Image.new("RGBA", rotated.size, (128,) * 4), rotated).convert(img.mode)


def _cutout_pixels(img, size: int):
    """The package's Cutout: a square of side 2 * (size // 2) around a centre drawn with numpy's generator,
    clipped to the image, filled with (125, 122, 113)."""
    img = img.copy()
    w, h = img.size
    cx, cy = np.random.randint(low=0, high=w), np.random.randint(low=0, high=h)
    half = int(size) // 2
    x0, y0, x1, y1 = max(0, cx - half), max(0, cy - half), min(w, cx + half), min(h, cy + half)
    if x1 > x0 and y1 > y0:
        img.paste((125, 122, 113), (x0, y0, x1, y1))
    return img


# operation name -> (magnitude for index m in 0..9, function(img, magnitude)), in the package's order
_OPS = {
    "Invert": (lambda m: None, lambda img, v: ImageOps.invert(img)),
    "Cutout": (lambda m: int(np.round(np.linspace(0, 20, 10)[m])), lambda img, v: _cutout_pixels(img, v)),
    "Sharpness": (lambda m: np.linspace(0, 0.9, 10)[m],
                  lambda img, v: ImageEnhance.Sharpness(img).enhance(1 + v * _sign())),
    "AutoContrast": (lambda m: None, lambda img, v: ImageOps.autocontrast(img)),
    "Posterize": (lambda m: int(np.round(np.linspace(8, 4, 10)[m])), lambda img, v: ImageOps.posterize(img, v)),
    "ShearX": (lambda m: np.linspace(0, 0.3, 10)[m], lambda img, v: _affine(img, (1, v * _sign(), 0, 0, 1, 0))),
    # translations resample with nearest neighbours (PIL's default, which the package uses): whole-pixel shifts
    "TranslateX": (lambda m: np.linspace(0, 150 / 331, 10)[m],
                   lambda img, v: _affine(img, (1, 0, v * img.size[0] * _sign(), 0, 1, 0), Image.Resampling.NEAREST)),
    "TranslateY": (lambda m: np.linspace(0, 150 / 331, 10)[m],
                   lambda img, v: _affine(img, (1, 0, 0, 0, 1, v * img.size[1] * _sign()), Image.Resampling.NEAREST)),
    "ShearY": (lambda m: np.linspace(0, 0.3, 10)[m], lambda img, v: _affine(img, (1, 0, 0, v * _sign(), 1, 0))),
    "Rotate": (lambda m: np.linspace(0, 30, 10)[m], lambda img, v: _rotate_grey(img, v)),   # counter-clockwise
    "Equalize": (lambda m: None, lambda img, v: ImageOps.equalize(img)),
    "Contrast": (lambda m: np.linspace(0, 0.9, 10)[m],
                 lambda img, v: ImageEnhance.Contrast(img).enhance(1 + v * _sign())),
    "Color": (lambda m: np.linspace(0, 0.9, 10)[m], lambda img, v: ImageEnhance.Color(img).enhance(1 + v * _sign())),
    "Solarize": (lambda m: np.linspace(256, 0, 10)[m], lambda img, v: ImageOps.solarize(img, v)),
    "Brightness": (lambda m: np.linspace(0, 0.9, 10)[m],
                   lambda img, v: ImageEnhance.Brightness(img).enhance(1 + v * _sign())),
}


def apply_op(img: Image.Image, name: str, m: int) -> Image.Image:
    """One operation of the policy at magnitude index ``m`` (1..9)."""
    magnitude_fn, op = _OPS[name]
    return op(img, magnitude_fn(m))


class OfficialRandAugment:
    """The ``randaugment==1.0.2`` policy that Q2L, SALGL and SGRE train with, draw for draw: one of the
    135 x 135 pairs of (operation, magnitude 1..9) chosen uniformly, then each applied with p = 0.5.  Given
    the same ``random`` and ``numpy`` states it returns the package's image bit for bit (tested against the
    package itself)."""

    ops = tuple(_OPS)

    def __call__(self, img: Image.Image) -> Image.Image:
        """``img`` after the policy's random operations."""
        img = img.convert("RGB")
        n = len(self.ops) * 9
        index = random.randint(0, n * n - 1)
        for k in (index // n, index % n):
            name, m = self.ops[k // 9], k % 9 + 1
            if random.random() < 0.5:
                img = apply_op(img, name, m)
        return img


def starts_with_resize(inp) -> bool:
    """Whether the transforms begin with the deterministic Resize((S, S)) (so images can be cached resized)."""
    return not getattr(inp, "timm_augment", None)


def build_transform(inp, train: bool, uint8: bool = False) -> T.Compose:
    """Transform from ``InputParams``: Resize((S, S)) [-> flip -> cutout -> RandAugment] -> tensor -> normalise;
    with ``timm_augment`` timm's own ``create_transform`` (as MKT's official code builds it).

    ``uint8``: end with a uint8 tensor instead of the normalised float one; the engine converts and
    normalises whole batches on the device (the same arithmetic, once per batch instead of per image)."""
    mean, std = NORMALIZE[inp.normalize]
    if getattr(inp, "timm_augment", None):
        if inp.hflip or inp.cutout_factor > 0 or inp.randaugment != "none":
            raise ValueError("input.timm_augment replaces hflip, cutout_factor and randaugment: leave those unset")
        from timm.data import create_transform
        if train:
            return _posterize_zero_bits(create_transform(
                inp.image_size, is_training=True, color_jitter=False, re_prob=0.0, auto_augment=inp.timm_augment,
                interpolation="bicubic", mean=mean, std=std))
        return create_transform(inp.image_size, is_training=False, interpolation="bicubic", mean=mean, std=std)
    steps = [T.Resize((inp.image_size, inp.image_size))]
    if train:
        if inp.hflip:
            steps.append(T.RandomHorizontalFlip())
        if inp.cutout_factor > 0:
            steps.append(CutoutPIL(inp.cutout_factor))
        if inp.randaugment == "official":
            steps.append(OfficialRandAugment())
        elif inp.randaugment == "torchvision":
            steps.append(T.RandAugment())
    steps += [to_hwc_uint8] if uint8 else [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def to_hwc_uint8(img: Image.Image):
    """The image as a uint8 tensor [H, W, 3] (one copy; the batch is permuted to [B, 3, H, W] as a view)."""
    import torch
    return torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8))


def normalize_batch(images, mean, std, channels_last: bool = False):
    """A uint8 batch [B, H, W, 3] (of :func:`to_hwc_uint8` items) as ``ToTensor`` + ``Normalize`` would make it,
    image by image: x / 255, then (x - mean) / std, in float32 on the batch's device, as a contiguous
    [B, 3, H, W] tensor (or channels-last memory when asked; the layout is set while the batch is still
    uint8, a quarter of the bytes)."""
    import torch
    layout = torch.channels_last if channels_last else torch.contiguous_format
    images = images.permute(0, 3, 1, 2).contiguous(memory_format=layout)
    x = images.float().div_(255)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def _posterize_to_black(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:                 # what PIL < 11 did with bits=0: every value & ~255 = 0, a black image
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def _posterize_zero_bits(transform):
    """timm's increasing posterize reaches 0 bits when the magnitude noise (mstd) draws the top level; Pillow
    11 and later refuse 0 bits (ValueError in a loader worker), Pillow 10 and before made the image black, as
    in the official MKT runs.  Give timm's posterize ops that older behaviour."""
    for step in getattr(transform, "transforms", []):
        for op in getattr(step, "ops", []):
            if getattr(op, "name", "").startswith("Posterize"):
                op.aug_fn = _posterize_to_black
    return transform


def denormalize(images, normalize: str = "imagenet"):
    """Undo the normalisation of a batch [B, 3, H, W] for display; returns values in 0..1."""
    import torch
    mean, std = NORMALIZE[normalize]
    mean = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)
