"""The toy "ImageNet": single objects, one class each, for pretraining the toy backbone (docs/toy-world.md,
"Backbones in the toy world").

The real backbones are pretrained on ImageNet, whose classes are not the downstream labels; so here: one object
per image, of every colour x shape of the toy world (its 30 labels, first, in the toy world's label order) and of
the objects in no label set (the toy world's colours x distractor shapes, and the distractor colours x every
shape), 63 classes.  The object sits on a random scene background, at a side drawn log-uniform over the whole range
the toy world draws from (6 % to 45 % of the image side, so that small objects are in the pretraining too), at a
random position (partly cut at the border, as in the toy world) and rotation, drawn supersampled and reduced with
a box filter as the toy world's ``render_image`` draws.

Images are generated on the fly from a seed (same seed, same bytes) and held in memory: no files.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from mlc.data.toyworld import (
    _POLYGONS,
    ALL_COLOURS,
    COLOURS,
    DISTRACTOR_COLOURS,
    DISTRACTOR_SHAPES,
    SCENES,
    SHAPES,
    _background,
)

# (colour, shape) per class: the toy world's 30 labels first (its label order), then the objects in no label set
CLASSES: list[tuple[str, str]] = (
    [(c, s) for c in COLOURS for s in SHAPES]
    + [(c, s) for c in COLOURS for s in DISTRACTOR_SHAPES]
    + [(c, s) for c in DISTRACTOR_COLOURS for s in SHAPES + DISTRACTOR_SHAPES])
CLASS_NAMES = [f"{c} {s}" for c, s in CLASSES]
SIDE_RANGE = (0.06, 0.45)          # object side / image side: the toy world's whole range (ToyWorldConfig.size_bins)
# the toy world's size bins (ToyWorldConfig.size_bins), for reporting accuracy by object size
SIZE_BINS = {"small": (0.06, 0.09), "medium": (0.09, 0.26), "large": (0.26, 0.45)}
SPLIT_STREAMS = {"train": 0, "test": 1}     # the random stream of each split: [seed, TOY_IMAGENET, split, image]
TOY_IMAGENET = 2718                         # keeps these streams apart from the toy world's [seed, split, image]


@dataclass
class SingleObjects:
    """A generated set: images uint8 [N, S, S, 3], class indices [N] (into ``CLASSES``), object sides [N] (fraction
    of the image side), scene indices [N] (into ``SCENES``)."""
    images: np.ndarray
    labels: np.ndarray
    sides: np.ndarray
    scenes: np.ndarray

    def size_bin(self) -> np.ndarray:
        """The size bin of each image's object [N], an index into ``SIZE_BINS`` (its order)."""
        edges = [hi for _, hi in list(SIZE_BINS.values())[:-1]]
        return np.searchsorted(np.asarray(edges), self.sides, side="right")


def render_object(colour: str, shape: str, side: float, scene: str, rng: np.random.Generator,
                  image_size: int = 64, supersample: int = 4) -> np.ndarray:
    """One object of ``side`` (fraction of the image side) on a ``scene`` background, at a random position and
    rotation drawn from ``rng``: uint8 [S, S, 3].  Drawn as the toy world draws: the background small and upscaled,
    the polygon (dark outline) at ``supersample`` times the size, then a box-filter reduction."""
    big = image_size * supersample
    background = Image.fromarray(_background(scene, image_size, rng).astype(np.uint8))
    canvas = background.resize((big, big), Image.Resampling.NEAREST)
    radius = side * big / 2
    centre = rng.uniform(radius * 0.7, big - radius * 0.7, size=2)    # may be partly cut at the border
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = _POLYGONS[shape] @ rot.T * radius + centre
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in pts], fill=ALL_COLOURS[colour], outline=(25, 25, 25),
                                   width=max(1, supersample))
    return np.asarray(canvas.resize((image_size, image_size), Image.Resampling.BOX), dtype=np.uint8)


def single_objects(n: int, seed: int, split: str = "train", image_size: int = 64,
                   indices: np.ndarray | None = None) -> SingleObjects:
    """``n`` single-object images of ``split`` ("train" or "test": disjoint random streams), generated from
    ``seed``: image i is drawn from its own stream [seed, TOY_IMAGENET, split, i], so a set is the same bytes
    whatever else was generated before it.  Classes cycle through ``CLASSES`` (balanced); the side is
    log-uniform over ``SIDE_RANGE``, the scene uniform.  ``indices``: only those images of the ``n``, in that
    order (the same bytes as in the whole set), e.g. the first batches of a shuffled epoch."""
    if split not in SPLIT_STREAMS:
        raise ValueError(f"split must be one of {sorted(SPLIT_STREAMS)}, got {split!r}")
    which = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    if len(which) and (which.min() < 0 or which.max() >= n):
        raise ValueError(f"indices must lie in [0, {n}), got {which.min()}..{which.max()}")
    images = np.empty((len(which), image_size, image_size, 3), dtype=np.uint8)
    labels = which % len(CLASSES)
    sides = np.empty(len(which), dtype=np.float64)
    scenes = np.empty(len(which), dtype=np.int64)
    lo, hi = np.log(SIDE_RANGE[0]), np.log(SIDE_RANGE[1])
    for k, i in enumerate(which):
        rng = np.random.default_rng([seed, TOY_IMAGENET, SPLIT_STREAMS[split], int(i)])
        scenes[k] = rng.integers(len(SCENES))
        sides[k] = np.exp(rng.uniform(lo, hi))
        colour, shape = CLASSES[labels[k]]
        images[k] = render_object(colour, shape, float(sides[k]), SCENES[scenes[k]], rng, image_size)
    return SingleObjects(images, labels, sides, scenes)
