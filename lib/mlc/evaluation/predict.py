"""A trained model on images of one's own: the top labels with their probabilities and each label's map.

    from mlc.evaluation.predict import Predictor
    predictor = Predictor.from_run(params, "qks")
    predictor.set_labels(predictor.labels + ["umbrella"])      # open-vocabulary models take any label names
    for p in predictor(["photo1.jpg", "holiday/"], top_k=5):
        print(p.source, list(zip(p.labels, p.probs)))

Images are files, folders (every image file inside, sorted), PIL images, or a mix.  The model sees them
through the method's evaluation transform; the maps are the ``attention`` every model returns
([h, w] on its feature grid, docs/models.md), drawn by :func:`mlc.notebook.figures.heatmap_grid` as in the
attention notebook, or written one PNG per label by :func:`save_heatmaps` (``mlc predict --heatmaps DIR``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mlc.core.io import atomic_write
from mlc.data.dataset import to_rgb
from mlc.data.transforms import build_transform
from mlc.notebook.figures import heatmap_grid
from mlc.runs.checkpoints import load
from mlc.runs.data import prepare_data
from mlc.runs.resolve import method_params

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Prediction:
    """One image's top labels, their probabilities (sigmoid of the logits) and their maps [k, h, w]."""
    source: str
    image: Image.Image = field(repr=False)
    labels: list[str]
    probs: list[float]
    maps: np.ndarray = field(repr=False)


def expand_images(images) -> list[tuple[str, Image.Image]]:
    """(source name, RGB image) for files, folders, PIL images, or a list of those.  A missing file, a folder
    without images or a file that is not an image is an error naming it."""
    if isinstance(images, (str, os.PathLike, Image.Image)):
        images = [images]
    out = []
    for item in images:
        if isinstance(item, Image.Image):
            out.append((f"<image {len(out)}>", to_rgb(item)))
            continue
        path = Path(item).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise FileNotFoundError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)})")
            out += expand_images(files)
        elif not path.is_file():
            raise FileNotFoundError(f"{path}: no such image file or folder")
        else:
            try:
                with Image.open(path) as img:
                    out.append((str(path), to_rgb(img)))
            except OSError as e:
                raise OSError(f"{path}: cannot decode image ({e})") from None
    return out


_expand = expand_images


class Predictor:
    """A model in eval mode with its label names and its evaluation transform."""

    def __init__(self, model: torch.nn.Module, labels: list[str], transform, device: str = "cpu"):
        self.model, self.labels, self.transform = model.eval().to(device), list(labels), transform
        self.device = device
        self.method: str | None = None      # from_run: the method and where its weights came from (kind, file)
        self.weights: dict = {}

    @classmethod
    def from_run(cls, params, method: str | None = None, device: str = "cpu", checkpoint=None) -> "Predictor":
        """A finished run's best checkpoint of ``method``, or the weights of ``checkpoint`` (a kit or official
        file; released params: their released file), through :func:`mlc.load_model`.  Open-vocabulary models
        start with every label of the dataset (seen and unseen)."""
        manifest = prepare_data(params, progress=False)
        loaded = load(params, method, checkpoint, device=device)
        predictor = cls(loaded.model, loaded.label_names,
                        build_transform(method_params(params, loaded.method).input, train=False), device)
        predictor.method, predictor.weights = loaded.method, dict(loaded.weights)
        if predictor.open_vocabulary:
            predictor.set_labels(manifest.label_names)
        return predictor

    @property
    def open_vocabulary(self) -> bool:
        """Whether the model scores any label names (MKT, QKS) rather than its training labels only."""
        return hasattr(self.model, "set_label_names")

    def set_labels(self, names: list[str]) -> None:
        """Score these label names from now on (open-vocabulary models only)."""
        if not self.open_vocabulary:
            raise ValueError(f"{type(self.model).__name__} is a closed-set model: it scores its {len(self.labels)} "
                             f"training labels only (MKT and QKS take new label names)")
        names = list(dict.fromkeys(str(n) for n in names))
        self.model.set_label_names(names)
        self.labels = names

    def __call__(self, images, top_k: int | None = 5, threshold: float | None = None, batch_size: int = 16
                 ) -> list[Prediction]:
        """The top ``top_k`` labels of every image (None: every label; only those with probability >=
        ``threshold`` if given).  ``images``: see :func:`expand_images`."""
        return self.predict(expand_images(images), top_k, threshold, batch_size)

    @torch.no_grad()
    def predict(self, items: list[tuple[str, Image.Image]], top_k: int | None = 5, threshold: float | None = None,
                batch_size: int = 16) -> list[Prediction]:
        """:meth:`__call__` on images already read (:func:`expand_images`)."""
        out = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            batch = torch.stack([self.transform(img) for _, img in chunk]).to(self.device)
            result = self.model(batch)
            probs = torch.sigmoid(result["logits"].float()).cpu()
            maps = result["attention"].float().cpu().numpy()
            for i, (source, img) in enumerate(chunk):
                order = probs[i].argsort(descending=True)[:top_k].tolist()
                if threshold is not None:
                    order = [j for j in order if probs[i, j] >= threshold]
                out.append(Prediction(source, img, [self.labels[j] for j in order],
                                      [float(probs[i, j]) for j in order], maps[i, order]))
        return out


def prediction_grid(predictions: list[Prediction], title: str = "", scale_label: str = "attention"):
    """The attention notebook's heat-map grid for predictions: one row per image, one overlay per label."""
    titles = [[f"{name} {p:.2f}" for name, p in zip(pr.labels, pr.probs)] for pr in predictions]
    rows = [_short_name(pr.source) for pr in predictions]
    maps = [pr.maps if len(pr.maps) else np.zeros((1, 1, 1), np.float32) for pr in predictions]
    titles = [t if t else ["(no label above the threshold)"] for t in titles]
    return heatmap_grid([pr.image for pr in predictions], maps, titles, row_titles=rows, title=title,
                        scale_label=scale_label)


def predictions_table(predictions: list[Prediction]):
    """One row per image: its file name and its top labels with their probabilities."""
    import pandas as pd
    return pd.DataFrame([{"image": _short_name(pr.source),
                          **{f"top {i + 1}": f"{label} ({q:.2f})" for i, (label, q) in enumerate(zip(pr.labels,
                                                                                                    pr.probs))}}
                         for pr in predictions])


def _short_name(source: str) -> str:
    """A file's name, or the ``<image k>`` of an in-memory image."""
    return source if source.startswith("<") else Path(source).name


def upload_widget(predictor: Predictor, top_k: int = 5):
    """In JupyterLab: an upload button; each uploaded image is scored and drawn below it (needs ipywidgets)."""
    import io

    import ipywidgets as widgets
    from IPython.display import display
    upload = widgets.FileUpload(accept="image/*", multiple=True, description="images")
    output = widgets.Output()

    def show(change):
        output.clear_output()
        images = [to_rgb(Image.open(io.BytesIO(bytes(f["content"])))) for f in upload.value]
        if images:
            with output:
                preds = predictor(images, top_k=top_k)
                display(prediction_grid(preds, "your images"))
    upload.observe(show, names="value")
    return widgets.VBox([upload, output])


def save_heatmaps(predictions: list[Prediction], out_dir: str | Path, max_side: int = 512, min_side: int = 256
                  ) -> list[list[Path]]:
    """One PNG per label of each prediction: the image (its longest side brought within ``min_side`` and
    ``max_side`` pixels) with the label's map upsampled over it, ``<out_dir>/<image name>_<rank>_<label>.png``.
    The maps of one image share one colour scale (magma), so a weak map looks weak beside a strong one.  Returns
    the paths, per prediction and label."""
    import matplotlib
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmap, used, paths = matplotlib.colormaps["magma"], set(), []
    for pr in predictions:
        stem = _file_part(Path(pr.source).stem if not pr.source.startswith("<") else pr.source.strip("<>"))
        name, n = stem, 1
        while name in used:                         # two images of the same name (from two folders)
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        img = pr.image.convert("RGB")
        scale = min(max_side, max(min_side, max(img.size))) / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
        base = np.asarray(img, dtype=np.float32) / 255
        maps = np.asarray(pr.maps, dtype=np.float32)
        finite = maps[np.isfinite(maps)]
        lo, hi = (min(float(finite.min()), 0.0), float(finite.max())) if finite.size else (0.0, 1.0)
        mine = []
        for rank, (label, m) in enumerate(zip(pr.labels, maps), 1):
            grid = Image.fromarray(np.nan_to_num(m, nan=lo).astype(np.float32))          # mode F: values kept
            up = np.asarray(grid.resize(img.size, Image.BILINEAR))
            colour = cmap(np.clip((up - lo) / max(hi - lo, 1e-12), 0, 1))[..., :3]
            blend = Image.fromarray((255 * (0.45 * base + 0.55 * colour)).round().astype(np.uint8))
            path = out_dir / f"{name}_{rank}_{_file_part(label)}.png"
            atomic_write(path, lambda tmp, im=blend: im.save(tmp, format="PNG"))
            mine.append(path)
        paths.append(mine)
    return paths


def _file_part(text: str) -> str:
    """``text`` as part of a file name: letters, digits, ``.``, ``-`` and ``_``."""
    return re.sub(r"[^\w.-]+", "_", text).strip("._") or "image"


def prediction_records(predictions: list[Prediction], heatmaps: list[list[Path]] | None = None) -> list[dict]:
    """The predictions as JSON-ready records: ``{"image", "labels": [{"label", "score", "heatmap"?}, ...]}``,
    scores being the sigmoid probabilities."""
    out = []
    for i, pr in enumerate(predictions):
        labels = [{"label": label, "score": round(float(q), 6)} for label, q in zip(pr.labels, pr.probs)]
        if heatmaps is not None:
            for entry, path in zip(labels, heatmaps[i]):
                entry["heatmap"] = str(path)
        out.append({"image": pr.source, "labels": labels})
    return out
