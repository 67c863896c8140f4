"""Image transforms: square resize, flip, ASL's CutoutPIL, RandAugment, normalisation presets.

RandAugment comes in two flavours (``InputParams.randaugment``):

* ``"official"``: a re-implementation of the policy of PyPI ``randaugment==1.0.2``, which Query2Label,
  SALGL and SGRE train with (that package calls ``np.int`` and no longer runs on NumPy >= 1.24):
  per image two (operation, magnitude 1..9) pairs drawn uniformly from 15 operations, each
  applied with probability 0.5.
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


def _affine(img, matrix):
    return img.transform(img.size, Image.Transform.AFFINE, matrix, Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))


def _cutout_pixels(img, size):
    img = img.copy()
    w, h = img.size
    x, y = random.uniform(0, w), random.uniform(0, h)
    x0, y0 = int(max(0, x - size / 2)), int(max(0, y - size / 2))
    ImageDraw.Draw(img).rectangle([x0, y0, min(w, x0 + size), min(h, y0 + size)], fill=(125, 122, 113))
    return img


# operation name -> (magnitude for index m in 0..9, function(img, magnitude))
_OPS = {
    "ShearX": (lambda m: np.linspace(0, 0.3, 10)[m], lambda img, v: _affine(img, (1, v * _sign(), 0, 0, 1, 0))),
    "ShearY": (lambda m: np.linspace(0, 0.3, 10)[m], lambda img, v: _affine(img, (1, 0, 0, v * _sign(), 1, 0))),
    "TranslateX": (lambda m: np.linspace(0, 150 / 331, 10)[m],
                   lambda img, v: _affine(img, (1, 0, v * img.size[0] * _sign(), 0, 1, 0))),
    "TranslateY": (lambda m: np.linspace(0, 150 / 331, 10)[m],
                   lambda img, v: _affine(img, (1, 0, 0, 0, 1, v * img.size[1] * _sign()))),
    "Rotate": (lambda m: np.linspace(0, 30, 10)[m],
               lambda img, v: img.convert("RGBA").rotate(v).convert("RGB")),  # always counter-clockwise
    "Color": (lambda m: np.linspace(0, 0.9, 10)[m], lambda img, v: ImageEnhance.Color(img).enhance(1 + v * _sign())),
    "Posterize": (lambda m: int(np.round(np.linspace(8, 4, 10)[m])), lambda img, v: ImageOps.posterize(img, v)),
    "Solarize": (lambda m: np.linspace(256, 0, 10)[m], lambda img, v: ImageOps.solarize(img, v)),
    "Contrast": (lambda m: np.linspace(0, 0.9, 10)[m],
                 lambda img, v: ImageEnhance.Contrast(img).enhance(1 + v * _sign())),
    "Sharpness": (lambda m: np.linspace(0, 0.9, 10)[m],
                  lambda img, v: ImageEnhance.Sharpness(img).enhance(1 + v * _sign())),
    "Brightness": (lambda m: np.linspace(0, 0.9, 10)[m],
                   lambda img, v: ImageEnhance.Brightness(img).enhance(1 + v * _sign())),
    "AutoContrast": (lambda m: None, lambda img, v: ImageOps.autocontrast(img)),
    "Equalize": (lambda m: None, lambda img, v: ImageOps.equalize(img)),
    "Invert": (lambda m: None, lambda img, v: ImageOps.invert(img)),
    "Cutout": (lambda m: np.linspace(0, 20, 10)[m], lambda img, v: _cutout_pixels(img, v)),
}


class OfficialRandAugment:
    """The ``randaugment==1.0.2`` policy: two random (op, magnitude) pairs, each applied with p = 0.5."""

    ops = tuple(_OPS)

    def __call__(self, img: Image.Image) -> Image.Image:
        """``img`` after the policy's random operations."""
        img = img.convert("RGB")
        for _ in range(2):
            name, m = random.choice(self.ops), random.randint(1, 9)
            if random.random() < 0.5:
                magnitude_fn, op = _OPS[name]
                img = op(img, magnitude_fn(m))
        return img


def build_transform(inp, train: bool) -> T.Compose:
    """Transform from ``InputParams``: Resize((S, S)) [-> flip -> cutout -> RandAugment] -> tensor -> normalise."""
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
    mean, std = NORMALIZE[inp.normalize]
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def denormalize(images, normalize: str = "imagenet"):
    """Undo the normalisation of a batch [B, 3, H, W] for display; returns values in 0..1."""
    import torch
    mean, std = NORMALIZE[normalize]
    mean = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)
