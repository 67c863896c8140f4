"""The toy world: a generated miniature of multi-label classification (see README.md, "The toy world").

Images show 1 to 4 small coloured shapes ("red circle", "blue star", ...) on a scene background
("beach", "forest", ...). Each scene has its own background style, its own label prior and its own
co-occurring label pairs, so label co-occurrence depends on the scene. About a quarter of the labels
are *unseen*: every word of an unseen label occurs in some seen label, unseen objects are drawn in
every split, and the manifest marks them ``seen: false`` (open-vocabulary training drops their
columns, so they are present but unannotated in training, as in NUS-WIDE). Every image has a
caption naming all its objects and its scene. Same seed, same bytes.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from mlc.core.progress import bar as progress_bar
from mlc.data.manifest import Label, Manifest, ManifestError, write_manifest

COLOURS = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 220),
    "yellow": (250, 215, 30),
    "purple": (148, 60, 189),
    "orange": (255, 127, 14),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
# Objects that are in no label set: distractors in the scenes, and extra classes of the toy "ImageNet" that the
# backbones are pretrained on (ImageNet's classes are not COCO's either).
DISTRACTOR_SHAPES = ("diamond", "hexagon")
DISTRACTOR_COLOURS = {"grey": (128, 128, 128), "brown": (140, 86, 45), "pink": (247, 150, 200)}
SCENES = ("beach", "forest", "city", "snow", "night")
SCENE_PHRASES = {"beach": "at the beach", "forest": "in the forest", "city": "in the city",
                 "snow": "in the snow", "night": "at night"}
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass
class ToyWorldConfig:
    """Parameters of the generated world. Everything is derived from ``seed``."""
    seed: int = 0
    n_train: int = 3000
    n_val: int = 500
    n_test: int = 1000
    image_size: int = 64
    unseen_fraction: float = 0.25
    object_count_weights: tuple[float, ...] = (0.35, 0.35, 0.2, 0.1)  # P(1 object), P(2), ...: mean about 2
    object_scale: tuple[float, float] = (0.15, 0.40)   # object side as a fraction of the image side
    typical_labels_per_scene: int = 8
    atypical_weight: float = 0.06                      # prior weight of a label not typical of the scene
    pairs_per_scene: int = 3
    pair_probability: float = 0.6                      # chance that a label's scene partner joins it
    supersample: int = 4

    def key(self) -> str:
        """A short hash of everything that determines the generated world (its folder name)."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


@dataclass
class WorldStructure:
    """The latent structure of a world: labels, seen split, scene priors and pairs."""
    labels: list[tuple[str, str]]           # (colour, shape) per label index
    seen: np.ndarray                        # bool [C]
    scene_prior: np.ndarray                 # [S, C] sums to 1 per scene
    scene_pairs: list[dict[int, int]] = field(default_factory=list)  # per scene: label -> partner

    @property
    def names(self) -> list[str]:
        """Label names, ``<colour> <shape>``."""
        return [f"{c} {s}" for c, s in self.labels]


def build_structure(cfg: ToyWorldConfig) -> WorldStructure:
    """Labels, scenes, their label priors and co-occurring pairs, drawn from the config's seed."""
    rng = np.random.default_rng([cfg.seed, 7919])
    labels = [(c, s) for c in COLOURS for s in SHAPES]
    n = len(labels)
    # Seen/unseen split: every colour and every shape must keep at least one seen label.
    n_unseen = int(round(cfg.unseen_fraction * n))
    for _ in range(1000):
        unseen = rng.choice(n, size=n_unseen, replace=False)
        seen = np.ones(n, bool)
        seen[unseen] = False
        words_seen = {w for i in np.flatnonzero(seen) for w in labels[i]}
        if all(w in words_seen for i in unseen for w in labels[i]):
            break
    else:  # pragma: no cover - the constraint is easy to meet with 6 colours x 5 shapes
        raise RuntimeError("could not draw a seen/unseen split that keeps every word seen")
    # Scene priors: scene s favours a window of a random permutation, so every label is typical somewhere.
    perm = rng.permutation(n)
    S, k = len(SCENES), cfg.typical_labels_per_scene
    stride = max(1, math.ceil(n / S))
    prior = np.full((S, n), cfg.atypical_weight)
    pairs = []
    for s in range(S):
        typical = perm[(np.arange(k) + s * stride) % n]
        prior[s, typical] = 1.0
        shuffled = rng.permutation(typical)
        mapping = {}
        for a, b in zip(shuffled[0:2 * cfg.pairs_per_scene:2], shuffled[1:2 * cfg.pairs_per_scene:2]):
            mapping[int(a)], mapping[int(b)] = int(b), int(a)
        pairs.append(mapping)
    prior /= prior.sum(1, keepdims=True)
    return WorldStructure(labels=labels, seen=seen, scene_prior=prior, scene_pairs=pairs)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def _shape_polygon(shape: str) -> np.ndarray:
    """Unit-radius outline of a shape, [P, 2], centred at the origin."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "square":
        t = np.pi / 4 + np.arange(4) * np.pi / 2
        return np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "triangle":
        t = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if shape == "diamond":
        t = np.arange(4) * np.pi / 2
        return np.stack([0.6 * np.cos(t), np.sin(t)], 1)
    if shape == "hexagon":
        t = np.arange(6) * np.pi / 3
        return np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "cross":
        w = 0.32
        pts = [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1),
               (-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)]
        return np.array(pts, dtype=float)
    raise ValueError(shape)


_POLYGONS = {s: _shape_polygon(s) for s in SHAPES + DISTRACTOR_SHAPES}
ALL_COLOURS = {**COLOURS, **DISTRACTOR_COLOURS}


def _background(scene: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """[size, size, 3] float background in 0..255 for a scene, with per-image variation."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3))
    phase = rng.uniform(0, 2 * np.pi)
    if scene == "beach":
        horizon = rng.uniform(0.3, 0.5)
        sky = np.array([150, 200, 240]) * (1 - 0.25 * yy[..., None])
        sand = np.array([225, 200, 150]) + 12 * np.sin(40 * yy + phase)[..., None]
        img = np.where((yy < horizon)[..., None], sky, sand)
    elif scene == "forest":
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(5, 8) * xx + phase)
        img = np.array([35, 85, 45]) + stripes[..., None] * np.array([30, 45, 20])
    elif scene == "city":
        cells = rng.integers(5, 8)
        gx, gy = (xx * cells + phase) % 1, (yy * cells) % 1
        window = (gx > 0.25) & (gx < 0.75) & (gy > 0.25) & (gy < 0.75)
        img = np.where(window[..., None], np.array([185, 185, 170]), np.array([115, 115, 125]))
    elif scene == "snow":
        img = np.array([232, 238, 248]) - 25 * yy[..., None] * np.array([1, 0.6, 0.2])
        flakes = rng.random((size, size)) < 0.02
        img[flakes] = [175, 195, 230]
    elif scene == "night":
        img = np.array([18, 22, 60]) + 30 * yy[..., None] * np.array([0.5, 0.5, 1])
        stars = rng.random((size, size)) < 0.01
        img[stars] = [240, 240, 200]
    else:
        raise ValueError(scene)
    img = img * rng.uniform(0.9, 1.1) + rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255)


def render_image(scene: str, objects: list[tuple[str, str]], cfg: ToyWorldConfig, rng: np.random.Generator):
    """Draw one image; returns (PIL image, boxes [K, 4] in 0..1 xyxy)."""
    ss = cfg.supersample
    big = cfg.image_size * ss
    # The background needs no supersampling (it is smooth or pixel-sized texture): draw it small, upscale.
    background = Image.fromarray(_background(scene, cfg.image_size, rng).astype(np.uint8))
    canvas = background.resize((big, big), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    boxes = []
    for colour, shape in objects:
        side = rng.uniform(*cfg.object_scale) * big
        radius = side / 2
        centre = rng.uniform(radius * 0.7, big - radius * 0.7, size=2)  # may be partly cut at the border
        angle = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = _POLYGONS[shape] @ rot.T * radius + centre
        draw.polygon([tuple(p) for p in pts], fill=ALL_COLOURS[colour], outline=(25, 25, 25), width=max(1, ss))
        x0, y0 = np.clip(pts.min(0), 0, big)
        x1, y1 = np.clip(pts.max(0), 0, big)
        boxes.append([x0 / big, y0 / big, x1 / big, y1 / big])
    image = canvas.resize((cfg.image_size, cfg.image_size), Image.Resampling.BOX)
    return image, np.array(boxes, dtype=np.float32).reshape(-1, 4)


def caption_for(names: list[str], scene: str) -> str:
    """The caption of an image: every object it holds and its scene."""
    parts = [("an " if n[0] in "aeiou" else "a ") + n for n in names]
    objects = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{objects} {SCENE_PHRASES[scene]}"


def sample_image(structure: WorldStructure, cfg: ToyWorldConfig, rng: np.random.Generator):
    """Draw the content of one image: scene index and label indices (distinct, in drawing order)."""
    scene = int(rng.integers(len(SCENES)))
    weights = np.asarray(cfg.object_count_weights, dtype=float)
    n_obj = 1 + int(rng.choice(len(weights), p=weights / weights.sum()))
    prior = structure.scene_prior[scene]
    chosen: list[int] = []
    while len(chosen) < n_obj:
        partner = structure.scene_pairs[scene].get(chosen[-1]) if chosen else None
        if partner is not None and partner not in chosen and rng.random() < cfg.pair_probability:
            chosen.append(partner)
            continue
        p = prior.copy()
        p[chosen] = 0
        chosen.append(int(rng.choice(len(p), p=p / p.sum())))
    return scene, chosen


def generate(out_dir: str | Path, cfg: ToyWorldConfig | None = None, *, force: bool = False,
             progress: bool = True) -> Manifest:
    """Generate the toy world into ``out_dir`` (images/ + manifest files) and return its manifest.

    If ``out_dir`` already holds a complete world generated from the same config, it is reused.
    Generation writes into a temporary sibling directory that is renamed at the end, so an
    interrupted run never leaves a half world behind.
    """
    cfg = cfg or ToyWorldConfig()
    out = Path(out_dir)
    stamp = out / "toyworld.json"
    if out.exists() and not force:
        try:
            if json.loads(stamp.read_text()).get("key") == cfg.key():
                return Manifest(out)
        except (OSError, json.JSONDecodeError, ManifestError):
            pass
        raise FileExistsError(f"{out} exists but was not generated from this toy-world config "
                              f"(key {cfg.key()}); choose another directory or pass force=True")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_world(tmp, cfg, progress)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(e.errno, f"no space left on device while generating the toy world into {out} "
                                   f"({e.strerror}: {e.filename}); the partial world was removed, nothing was kept; "
                                   f"free space or set data.root to a folder on another disk", str(out)) from None
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return Manifest(out)


def _write_world(tmp: Path, cfg: ToyWorldConfig, progress: bool) -> None:
    """Every image and the manifest of a world into ``tmp`` (renamed onto the world's folder when complete)."""
    structure = build_structure(cfg)
    splits = {}
    total = cfg.n_train + cfg.n_val + cfg.n_test
    bar = progress_bar(total=total, desc="toy world", disable=not progress)
    for split, n in (("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test)):
        (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(n):
            rng = np.random.default_rng([cfg.seed, SPLIT_IDS[split], i])
            scene, chosen = sample_image(structure, cfg, rng)
            image, boxes = render_image(SCENES[scene], [structure.labels[c] for c in chosen], cfg, rng)
            rel = f"images/{split}/{i:05d}.png"
            image.save(tmp / rel, optimize=False)
            rows.append({
                "image": rel,
                "pos": sorted(set(chosen)),
                "scene": scene,
                "caption": caption_for([structure.names[c] for c in chosen], SCENES[scene]),
                "box_labels": chosen,
                "boxes": boxes.tolist(),
                "width": cfg.image_size,
                "height": cfg.image_size,
            })
            bar.update()
        splits[split] = pd.DataFrame(rows)
    bar.close()
    labels = [Label(index=i, id=name, name=name, seen=bool(structure.seen[i]))
              for i, name in enumerate(structure.names)]
    write_manifest(tmp, name="toy", labels=labels, splits=splits, image_root=".", absent="negative",
                   extra={"scenes": list(SCENES),
                          "scene_prior": structure.scene_prior.round(6).tolist(),
                          "scene_pairs": [{structure.names[a]: structure.names[b] for a, b in m.items()}
                                          for m in structure.scene_pairs]})
    (tmp / "toyworld.json").write_text(json.dumps({"key": cfg.key(), "config": asdict(cfg)}, indent=1))
