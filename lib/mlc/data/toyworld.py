"""The toy world: a generated miniature of multi-label classification (docs/toy-world.md says why each
property is there and which fact about the real datasets it stands for).

Images show coloured shapes ("red circle", "blue star", ...) on a scene background ("beach", "forest", ...), with
the conditions the five papers were made for:

* **small objects**: object sides follow COCO's small / medium / large shares (41 / 34 / 24 % of instances),
  mapped onto the toy's 8 x 8 feature grid as the papers' 448-px inputs map onto their 14 x 14 grid; a small
  toy object is 4 to 6 pixels wide, where its colour shows but its shape barely does;
* **clutter and occlusion**: about 3 labels an image (COCO: 2.9 categories), repeated instances of a label,
  shapes in no label set (distractors), drawn in random order so that later objects hide earlier ones;
* **context that decides what appearance cannot**: the five shapes of one colour are typical of five different
  scenes, so a small object's colour (visible) and its scene (the background) name it where its shape does not;
  each scene also has co-occurring label pairs;
* **captions that name the salient objects**: an object is named with a probability that grows with its size,
  as alt-text and COCO captions name large objects far more often than small ones;
* **a long tail of label frequencies** (COCO's "person" is in about half the images);
* **a broad seen vocabulary of noisy tags**: besides the 30 object labels, the manifest has tag labels (``kind:
  "tag"``, all seen): the colour and shape words ("red", "circle"), the scene words ("beach") and the objects in no
  label set ("pink circle"), 54 tags, so that the open-vocabulary methods train on about ten seen labels for each
  unseen one (NUS-WIDE: 925 against 81).  As user tags, they name what is salient: an instance is tagged with the
  chance a caption names it, and a tag is missing when no instance it names is tagged; the scene tag never is.

About a quarter of the object labels are *unseen*: every word of an unseen label occurs in some seen label and is a
seen tag, unseen objects are drawn in every split, and the manifest marks them ``seen: false`` (open-vocabulary
training drops their columns, so they are present but unannotated in training, as in NUS-WIDE; their instances
still make word tags positive, as a user tags "red" on a photo of an unseen red star).  The object labels come
first, with the indices they had before the tags; closed-set methods train on them alone (``label_subset:
objects``).  Same seed, same bytes; the tags are drawn from a random stream of their own, so the images,
captions and boxes are those of the same world without tags (``tags: false``).
"""
from __future__ import annotations

import errno
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from mlc.core.cpu import usable_cores
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
TAG_STREAM = 104729                 # the tags' random stream per image: [seed, split, image, TAG_STREAM]


SIZE_BINS = ("small", "medium", "large")


@dataclass
class ToyWorldConfig:
    """Parameters of the generated world. Everything is derived from ``seed``.  The defaults are the real
    conditions of docs/toy-world.md; each field's comment names the fact it stands for."""
    seed: int = 0
    n_train: int = 3000
    n_val: int = 500
    n_test: int = 1000
    image_size: int = 64
    unseen_fraction: float = 0.25
    # distinct labels per image, P(1), P(2), ...: mean 2.85 (COCO: 2.9 categories an image)
    labels_per_image_weights: tuple[float, ...] = (0.15, 0.25, 0.3, 0.2, 0.1)
    # after each instance of a label, another one with this chance (at most 4): 1.67 instances a label; with
    # the distractors about 6.7 objects an image (COCO: 7.3 instances an image)
    extra_instance_probability: float = 0.4
    distractors_mean: float = 2.0                      # Poisson mean of shapes that are in no label set
    # object side as a fraction of the image side: small / medium / large bins and their shares of instances.
    # COCO: 41 % small (< 32 x 32 px), 34 % medium, 24 % large; at the papers' 448 px a small object spans under
    # 0.7 of a stride-32 feature cell, and 0.7 of the toy's 8-px cell is 9 % of 64 px (medium: under 2.1 cells,
    # 26 %).  Below 6 % (4 px) a shape is a blur of colour; above 45 % there is no room for the rest.
    size_bins: tuple[tuple[float, float], ...] = ((0.06, 0.09), (0.09, 0.26), (0.26, 0.45))
    size_weights: tuple[float, ...] = (0.41, 0.34, 0.24)
    atypical_weight: float = 0.06                      # prior weight of a label outside its scene
    pairs_per_scene: int = 3
    pair_probability: float = 0.6                      # chance that a label's scene partner joins it
    # label popularity ~ 1 / rank^exponent over a random order of the labels: a long tail in which the most
    # frequent label is in about 45 % of the images and the rarest in about 2 % (COCO's "person": about half)
    popularity_exponent: float = 1.3
    # chance that a caption names an object of each size bin (small, medium, large)
    mention_probability: tuple[float, ...] = (0.15, 0.55, 0.95)
    # a broad seen vocabulary (NUS-WIDE: 925 seen tags against 81 unseen; Open Images: 7,186 against 400): tag
    # labels besides the objects (``TAGS``), an instance tagged with its ``mention_probability`` (users tag what
    # is salient, so small objects' tags go missing); false: the object labels alone
    tags: bool = True
    supersample: int = 4

    def __post_init__(self):
        # one size bin, one share and one mention chance each: a params file that adds a bin must add all three
        if not len(self.size_bins) == len(self.size_weights) == len(self.mention_probability):
            raise ValueError(f"size_bins, size_weights and mention_probability must have one entry per size "
                             f"bin; got {len(self.size_bins)}, {len(self.size_weights)} and "
                             f"{len(self.mention_probability)}")

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
    typical_scene: np.ndarray | None = None  # [C] the scene each label is typical of
    popularity: np.ndarray | None = None     # [C] the long-tail weight of each label

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
    # Context: the shapes of one colour are typical of different scenes (a Latin square), so colour + scene
    # name a small object whose shape does not show.
    S = len(SCENES)
    typical_scene = np.empty(n, int)
    for ci in range(len(COLOURS)):
        order = rng.permutation(S)
        for si in range(len(SHAPES)):
            typical_scene[ci * len(SHAPES) + si] = order[si % S]
    popularity = np.empty(n)
    popularity[rng.permutation(n)] = 1.0 / (1.0 + np.arange(n)) ** cfg.popularity_exponent
    prior = popularity[None, :] * np.where(typical_scene[None, :] == np.arange(S)[:, None], 1.0,
                                           cfg.atypical_weight)
    pairs = []
    for s in range(S):
        shuffled = rng.permutation(np.flatnonzero(typical_scene == s))
        mapping = {}
        for a, b in zip(shuffled[0:2 * cfg.pairs_per_scene:2], shuffled[1:2 * cfg.pairs_per_scene:2]):
            mapping[int(a)], mapping[int(b)] = int(b), int(a)
        pairs.append(mapping)
    prior /= prior.sum(1, keepdims=True)
    return WorldStructure(labels=labels, seen=seen, scene_prior=prior, scene_pairs=pairs,
                          typical_scene=typical_scene, popularity=popularity)


DISTRACTORS = [(c, s) for c in COLOURS for s in DISTRACTOR_SHAPES] + \
              [(c, s) for c in DISTRACTOR_COLOURS for s in SHAPES + DISTRACTOR_SHAPES]
# The tags (all seen), after the object labels in this order: every colour and shape word, every scene word, and
# every nameable object in no label set.  An unseen label is never a tag, but each of its words is.
WORD_TAGS = [*COLOURS, *DISTRACTOR_COLOURS, *SHAPES, *DISTRACTOR_SHAPES]
TAGS = WORD_TAGS + list(SCENES) + [f"{c} {s}" for c, s in DISTRACTORS]


def tag_image(objects: list[tuple[int, str, str]], bins: np.ndarray, scene: int, cfg: ToyWorldConfig,
              rng: np.random.Generator) -> list[int]:
    """The tags of one image, as indices into ``TAGS``: its scene, and for each *tagged* instance (chance
    ``mention_probability`` of its size bin, as users tag what is salient) its colour, its shape, and its name if
    it is in no label set.  ``objects``: (label index or -1, colour, shape) [K]; ``bins``: size bins [K]."""
    tagged = rng.random(len(objects)) < np.asarray(cfg.mention_probability)[np.asarray(bins, dtype=np.int64)]
    names = {SCENES[scene]}
    for (label, colour, shape), t in zip(objects, tagged):
        if t:
            names.update((colour, shape) if label >= 0 else (colour, shape, f"{colour} {shape}"))
    return sorted(TAGS.index(n) for n in names)


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


def object_side(cfg: ToyWorldConfig, rng: np.random.Generator) -> tuple[float, int]:
    """An object's side (fraction of the image side) and its size bin: a bin by COCO's shares, then
    log-uniform within it."""
    weights = np.asarray(cfg.size_weights, dtype=float)
    b = int(rng.choice(len(weights), p=weights / weights.sum()))
    lo, hi = cfg.size_bins[b]
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), b


def render_image(scene: str, objects: list[tuple[str, str]], cfg: ToyWorldConfig, rng: np.random.Generator):
    """Draw one image, its objects in the given order (later ones hide earlier ones).

    Returns (PIL image, boxes [K, 4] in 0..1 xyxy, sides [K] as fractions of the image side, size bins [K],
    visible [K]: the share of each object's area not hidden by later objects or cut by the border)."""
    ss = cfg.supersample
    big = cfg.image_size * ss
    # The background needs no supersampling (it is smooth or pixel-sized texture): draw it small, upscale.
    background = Image.fromarray(_background(scene, cfg.image_size, rng).astype(np.uint8))
    canvas = background.resize((big, big), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    owner = Image.new("L", (big, big), 0)           # which object each pixel shows (0: background)
    owner_draw = ImageDraw.Draw(owner)
    boxes, sides, bins, areas = [], [], [], []
    for k, (colour, shape) in enumerate(objects):
        side, b = object_side(cfg, rng)
        radius = side * big / 2
        centre = rng.uniform(radius * 0.7, big - radius * 0.7, size=2)  # may be partly cut at the border
        angle = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = _POLYGONS[shape] @ rot.T * radius + centre
        polygon = [tuple(p) for p in pts]
        draw.polygon(polygon, fill=ALL_COLOURS[colour], outline=(25, 25, 25), width=max(1, ss))
        owner_draw.polygon(polygon, fill=k + 1)
        # the whole area, border included (a shoelace over the unclipped outline), in supersampled pixels
        x, y = pts[:, 0], pts[:, 1]
        areas.append(0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))))
        x0, y0 = np.clip(pts.min(0), 0, big)
        x1, y1 = np.clip(pts.max(0), 0, big)
        boxes.append([x0 / big, y0 / big, x1 / big, y1 / big])
        sides.append(side)
        bins.append(b)
    shown = np.bincount(np.asarray(owner).ravel(), minlength=len(objects) + 1)[1:]
    visible = np.clip(shown / np.maximum(areas, 1.0), 0.0, 1.0) if objects else np.zeros(0)
    image = canvas.resize((cfg.image_size, cfg.image_size), Image.Resampling.BOX)
    return (image, np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(sides, dtype=np.float32),
            np.array(bins, dtype=np.int64), visible.astype(np.float32))


def caption_for(names: list[str], scene: str) -> str:
    """The caption of an image: the objects it names (none: only the scene) and its scene."""
    if not names:
        return f"a photo {SCENE_PHRASES[scene]}"
    parts = [("an " if n[0] in "aeiou" else "a ") + n for n in names]
    objects = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{objects} {SCENE_PHRASES[scene]}"


def sample_image(structure: WorldStructure, cfg: ToyWorldConfig, rng: np.random.Generator):
    """Draw the content of one image: its scene index, its labels (distinct, in drawing order) and its objects
    in drawing order as (label index, or -1 for a distractor; colour; shape)."""
    scene = int(rng.integers(len(SCENES)))
    weights = np.asarray(cfg.labels_per_image_weights, dtype=float)
    n_labels = 1 + int(rng.choice(len(weights), p=weights / weights.sum()))
    prior = structure.scene_prior[scene]
    chosen: list[int] = []
    while len(chosen) < n_labels:
        partner = structure.scene_pairs[scene].get(chosen[-1]) if chosen else None
        if partner is not None and partner not in chosen and rng.random() < cfg.pair_probability:
            chosen.append(partner)
            continue
        p = prior.copy()
        p[chosen] = 0
        chosen.append(int(rng.choice(len(p), p=p / p.sum())))
    objects = []
    for label in chosen:
        count = 1
        while count < 4 and rng.random() < cfg.extra_instance_probability:
            count += 1
        objects += [(label, *structure.labels[label])] * count
    for _ in range(min(int(rng.poisson(cfg.distractors_mean)), 6)):
        objects.append((-1, *DISTRACTORS[int(rng.integers(len(DISTRACTORS)))]))
    objects = [objects[i] for i in rng.permutation(len(objects))]
    return scene, chosen, objects


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


# A world of at least this many images is drawn by one process per core: each image has its own random stream
# ([seed, split, index]), so the images and rows are the same whoever draws them.  Below it, starting the
# processes would cost more than they save (the test worlds).
PARALLEL_FROM_IMAGES = 1000
_CHUNK = 250


def _draw_images(tmp: Path, cfg: ToyWorldConfig, structure: WorldStructure, split: str, indices: range
                 ) -> list[dict]:
    """Draw and write the images ``indices`` of ``split`` into ``tmp``; returns their manifest rows."""
    rows = []
    for i in indices:
        rng = np.random.default_rng([cfg.seed, SPLIT_IDS[split], i])
        scene, chosen, objects = sample_image(structure, cfg, rng)
        image, boxes, sides, bins, visible = render_image(SCENES[scene], [(c, s) for _, c, s in objects], cfg,
                                                          rng)
        labelled = np.array([label >= 0 for label, _, _ in objects], dtype=bool)
        instance_labels = [label for label, _, _ in objects if label >= 0]
        # a label is named when any of its instances is; the chance grows with the instance's size
        said = rng.random(len(objects)) < np.asarray(cfg.mention_probability)[bins]
        named = [c for c in chosen if any(said[k] and objects[k][0] == c for k in range(len(objects)))]
        # the tags from a stream of their own: the world's other draws are those of a world without tags
        tags = tag_image(objects, bins, scene, cfg, np.random.default_rng([cfg.seed, SPLIT_IDS[split], i,
                                                                            TAG_STREAM])) if cfg.tags else []
        rel = f"images/{split}/{i:05d}.png"
        image.save(tmp / rel, optimize=False)
        rows.append({
            "image": rel,
            "pos": sorted(set(chosen)) + [len(structure.names) + t for t in tags],
            "scene": scene,
            "caption": caption_for([structure.names[c] for c in named], SCENES[scene]),
            "caption_labels": named,
            "box_labels": instance_labels,
            "boxes": boxes[labelled].tolist(),
            "box_sizes": sides[labelled].tolist(),
            "box_visible": visible[labelled].tolist(),
            "distractors": int((~labelled).sum()),
            "distractor_names": [f"{c} {s}" for label, c, s in objects if label < 0],
            "distractor_sizes": sides[~labelled].tolist(),
            "width": cfg.image_size,
            "height": cfg.image_size,
        })
    return rows


def _world_workers(total: int) -> int:
    """Processes that draw a world of ``total`` images: one per core for a large world, else none."""
    import multiprocessing
    if "fork" not in multiprocessing.get_all_start_methods():
        return 0                # spawn would run an unguarded user script again in each process
    cores = usable_cores()
    return cores if total >= PARALLEL_FROM_IMAGES and cores > 1 else 0


def _write_world(tmp: Path, cfg: ToyWorldConfig, progress: bool, workers: int | None = None) -> None:
    """Every image and the manifest of a world into ``tmp`` (renamed onto the world's folder when complete).
    ``workers``: processes that draw the images (None: one per core for a world of at least
    ``PARALLEL_FROM_IMAGES`` images; 0: this process)."""
    structure = build_structure(cfg)
    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    total = sum(sizes.values())
    workers = _world_workers(total) if workers is None else workers
    for split in sizes:
        (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
    chunks = [(split, range(lo, min(lo + _CHUNK, n))) for split, n in sizes.items() for lo in range(0, n, _CHUNK)]
    bar = progress_bar(total=total, desc="toy world", disable=not progress)
    drawn: dict[tuple[str, int], list[dict]] = {}
    if workers:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        # fork, as torch's DataLoader workers: the children draw with numpy and PIL only, touching no lock or
        # thread pool of the caller's (spawn would import the caller's main script again, unguarded or stdin)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = {pool.submit(_draw_images, tmp, cfg, structure, split, idx): (split, idx.start)
                       for split, idx in chunks}
            for future in as_completed(futures):
                drawn[futures[future]] = future.result()
                bar.update(len(drawn[futures[future]]))
    else:
        for split, idx in chunks:
            drawn[(split, idx.start)] = _draw_images(tmp, cfg, structure, split, idx)
            bar.update(len(idx))
    bar.close()
    rows: dict[str, list[dict]] = {split: [] for split in sizes}
    for split, idx in chunks:                       # in index order, whichever process finished first
        rows[split] += drawn[(split, idx.start)]
    splits = {split: pd.DataFrame(r) for split, r in rows.items()}
    labels = [Label(index=i, id=name, name=name, seen=bool(structure.seen[i]))
              for i, name in enumerate(structure.names)]
    if cfg.tags:
        labels += [Label(index=len(labels) + t, id=name, name=name, seen=True, kind="tag")
                   for t, name in enumerate(TAGS)]
    write_manifest(tmp, name="toy", labels=labels, splits=splits, image_root=".", absent="negative",
                   extra={"scenes": list(SCENES),
                          "scene_prior": structure.scene_prior.round(6).tolist(),
                          "scene_pairs": [{structure.names[a]: structure.names[b] for a, b in m.items()}
                                          for m in structure.scene_pairs],
                          "typical_scene": {structure.names[c]: SCENES[s]
                                            for c, s in enumerate(structure.typical_scene)},
                          "size_bins": [list(b) for b in cfg.size_bins]})
    (tmp / "toyworld.json").write_text(json.dumps({"key": cfg.key(), "config": asdict(cfg)}, indent=1))


# ---------------------------------------------------------------------------------------------
# The conditions, measured (notebook 01, docs/toy-world.md, tests/test_toyworld.py)
# ---------------------------------------------------------------------------------------------
def _column(df: pd.DataFrame, name: str) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=float).ravel() for v in df[name]]) if len(df) else np.zeros(0)


def context_oracles(manifest: Manifest, split: str = "val") -> dict[str, float]:
    """How often the world's own label prior names a small object from what shows of it (its colour) alone,
    and from its colour and its scene: the gap is what context decides that appearance cannot."""
    prior = np.asarray(manifest.meta["scene_prior"])                    # [S, C] over the object labels
    objects = manifest.object_indices
    column = {int(label): j for j, label in enumerate(objects)}
    colours = [manifest.label_names[i].split()[0] for i in objects]
    same_colour = np.array([[a == b for b in colours] for a in colours])  # [C, C]
    marginal = prior.mean(0)                                            # scenes are equally likely
    df = manifest.split(split)
    small = manifest.meta.get("size_bins", [[0, 0.09]])[0][1]
    alone = with_scene = total = 0
    for scene, labels, sizes in zip(df["scene"], df["box_labels"], df["box_sizes"]):
        for label, side in zip(labels, sizes):
            if side >= small:
                continue
            label = column[int(label)]
            total += 1
            alone += int(np.argmax(np.where(same_colour[label], marginal, -1)) == label)
            with_scene += int(np.argmax(np.where(same_colour[label], prior[scene], -1)) == label)
    return {"small instances": total, "appearance only": alone / max(total, 1),
            "appearance + scene": with_scene / max(total, 1)}


def world_statistics(manifest: Manifest, split: str = "train") -> pd.DataFrame:
    """Each condition of the toy world with its statistic on one split, beside the real fact it stands for.
    The label statistics are the object labels' (the tags have rows of their own)."""
    df = manifest.split(split)
    targets = manifest.dense_targets(split, manifest.object_indices) == 1
    sizes, visible = _column(df, "box_sizes"), _column(df, "box_visible")
    bins = np.digitize(sizes, [b[1] for b in manifest.meta["size_bins"][:-1]])
    frequency = np.sort(targets.mean(0))[::-1]
    rows = [
        ("clutter", "labels an image", targets.sum(1).mean(), "COCO: 2.9 categories an image"),
        ("clutter", "objects an image (distractors included)",
         df["box_labels"].map(len).mean() + df["distractors"].mean(), "COCO: 7.3 instances an image"),
        ("clutter", "distractors an image (in no label set)", df["distractors"].mean(), ""),
        ("occlusion", "% of labelled objects over a quarter hidden or cut", 100 * (visible < 0.75).mean(), ""),
    ]
    real = {"small": "COCO: 41 %", "medium": "COCO: 34 %", "large": "COCO: 24 %"}
    rows += [("small objects", f"% of labelled objects {b}", 100 * (bins == k).mean(), real[b])
             for k, b in enumerate(SIZE_BINS)]
    mentioned = []
    for pos_named, labels, sizes_ in zip(df["caption_labels"], df["box_labels"], df["box_sizes"]):
        named = set(np.asarray(pos_named).tolist())
        largest: dict[int, float] = {}
        for label, side in zip(labels, sizes_):
            largest[int(label)] = max(largest.get(int(label), 0.0), float(side))
        mentioned += [(side, label in named) for label, side in largest.items()]
    if mentioned:
        side, said = np.array(mentioned).T
        label_bins = np.digitize(side, [b[1] for b in manifest.meta["size_bins"][:-1]])
        rows += [("captions", f"% of labels named, largest instance {b}", 100 * said[label_bins == k].mean(),
                  "captions name large objects far more often than small ones") for k, b in enumerate(SIZE_BINS)
                 if (label_bins == k).any()]
    rows += [("long tail", "% of images with the most frequent label", 100 * frequency[0],
              "COCO: 'person' in about half"),
             ("long tail", "% of images with the rarest label", 100 * frequency[-1], "")]
    oracles = context_oracles(manifest, split)
    rows += [("context", "small objects named right from colour alone (%)", 100 * oracles["appearance only"],
              "small or ambiguous objects are recognised from the scene"),
             ("context", "small objects named right from colour + scene (%)", 100 * oracles["appearance + scene"],
              "")]
    rows += vocabulary_statistics(manifest, split)
    return pd.DataFrame(rows, columns=["condition", "statistic", "toy world", "real fact"]).round(
        {"toy world": 2})


def missing_tags(manifest: Manifest, split: str = "train") -> pd.DataFrame:
    """Every (image, tag) pair whose tag names something the image shows, one row each: ``tag``, ``group``
    (word, scene or object), ``side`` (the largest instance it names, as a fraction of the image side; 1 for a
    scene) and ``missing`` (the tag is not among the image's labels: no instance it names was tagged)."""
    df = manifest.split(split)
    names = manifest.label_names
    tag_of = {names[i]: int(i) for i in manifest.tag_indices}
    scenes = manifest.meta.get("scenes", [])
    group = {n: "scene" if n in scenes else "word" if " " not in n else "object" for n in tag_of}
    rows = []
    for r in df.itertuples(index=False):
        pos = set(np.asarray(r.pos).tolist())
        largest: dict[str, float] = {}
        instances = [(names[int(label)], float(side)) for label, side in zip(r.box_labels, r.box_sizes)]
        instances += [(str(name), float(side)) for name, side in zip(r.distractor_names, r.distractor_sizes)]
        for name, side in instances:
            colour, shape = name.split()
            for tag in (colour, shape, name):
                if tag in tag_of:
                    largest[tag] = max(largest.get(tag, 0.0), side)
        if scenes and scenes[r.scene] in tag_of:
            largest[scenes[r.scene]] = 1.0
        rows += [(tag, group[tag], side, tag_of[tag] not in pos) for tag, side in largest.items()]
    return pd.DataFrame(rows, columns=["tag", "group", "side", "missing"])


def vocabulary_statistics(manifest: Manifest, split: str = "train") -> list[tuple]:
    """The broad seen vocabulary's rows of :func:`world_statistics` (none for a world without tags): seen tags,
    seen objects and unseen labels, their ratio, the unseen labels' words that are seen tags, and how often a tag
    is missing by the size of the largest instance it names."""
    tags, objects = manifest.tag_indices, manifest.object_indices
    if not len(tags) or "distractor_names" not in manifest.split(split):
        return []
    seen_tags = [i for i in tags if manifest.labels[i].seen]
    seen = {manifest.label_names[i] for i in seen_tags}
    seen_objects = [i for i in objects if manifest.labels[i].seen]
    unseen = manifest.unseen_indices
    words = [w for i in unseen for w in manifest.label_names[i].split()]
    targets = manifest.dense_targets(split, tags) == 1
    v = "broad seen vocabulary"
    rows = [(v, "seen tags", len(seen_tags), "NUS-WIDE: 925 seen tags; Open Images: 7,186 seen labels"),
            (v, "seen object labels", len(seen_objects), ""),
            (v, "unseen labels", len(unseen), "NUS-WIDE: 81; Open Images: 400"),
            (v, "seen : unseen labels", (len(seen_tags) + len(seen_objects)) / max(len(unseen), 1),
             "NUS-WIDE: 11.4 (1,006 tags); Open Images: 18.0"),
            (v, "% of the unseen labels' words that are seen tags", 100 * np.mean([w in seen for w in words]),
             "the unseen labels' words occur in other combinations"),
            (v, "tags an image", targets.sum(1).mean(), "")]
    missing = missing_tags(manifest, split)
    scene = missing[missing["group"] == "scene"]
    named = missing[missing["group"] != "scene"]
    tag_bins = np.digitize(named["side"], [b[1] for b in manifest.meta["size_bins"][:-1]])
    rows += [(v, f"% of tags missing, largest instance {b}", 100 * named["missing"][tag_bins == k].mean(),
              "user tags are noisy: what is small goes untagged") for k, b in enumerate(SIZE_BINS)
             if (tag_bins == k).any()]
    if len(scene):
        rows.append((v, "% of images without their scene tag", 100 * scene["missing"].mean(), ""))
    return rows
