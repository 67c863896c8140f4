"""Per-label attention maps of any trained method, and how well they point at the objects.

Every kit model returns ``attention`` [B, C, h, w] on its own feature grid: Query2Label's last-layer
cross-attention (heads averaged), SALGL's and SGRE's label attention, QKS's winning-query cross-attention,
MKT's local-stream patch similarity.  The **pointing game** counts an (image, ground-truth label) pair as a
hit when the peak of that label's map falls inside a box of that label; its chance level is the share of
grid cells inside those boxes (where a peak drawn at random would land).
"""
from __future__ import annotations

import numpy as np
import torch

from mlc.core.io import atomic_write_json
from mlc.core.progress import bar as progress_bar
from mlc.core.registry import model_entry
from mlc.data.dataset import MultiLabelDataset
from mlc.data.transforms import build_transform
from mlc.engine.loop import make_loader
from mlc.runs.build import load_trained
from mlc.runs.data import prepare_data
from mlc.runs.resolve import method_params


def map_kind(model_name: str) -> str:
    """What a model's ``attention`` holds, for colour-bar labels (docs/models.md): attention weights unless the
    model registered another kind (MKT's maps are signed patch-label similarities)."""
    return model_entry(model_name).map_kind


def load_for_maps(params, name: str, manifest, device: str = "cpu"):
    """The trained model, scoring every label of the manifest in manifest order."""
    model = load_trained(params, name, device=device)
    if params.methods[name].label_subset != "all" and hasattr(model, "set_label_names"):
        model.set_label_names(manifest.label_names)
    return model


def scored_labels(params, name: str, manifest, model) -> np.ndarray:
    """The manifest index of each column of a model from :func:`load_for_maps`: every label for a model that
    scores label names (open vocabulary), else its ``label_subset`` (the toy world's closed-set methods: the
    objects, not the tags)."""
    if hasattr(model, "set_label_names"):
        return np.arange(manifest.num_labels)
    return manifest.label_subset(params.methods[name].label_subset)


def select_images(manifest, split: str, images) -> list[int]:
    """``"first:n"``, a list of row indices, or a list of image paths / ids (the ``image`` column)."""
    df = manifest.split(split)
    if isinstance(images, str) and images.startswith("first:"):
        return list(range(min(int(images.split(":")[1]), len(df))))
    out = []
    for x in images:
        if isinstance(x, (int, np.integer)):
            if not 0 <= x < len(df):
                raise IndexError(f"image index {x} outside the {len(df)} images of split {split!r}")
            out.append(int(x))
        else:
            hits = np.flatnonzero(df["image"].astype(str).str.contains(str(x), regex=False).to_numpy())
            if not len(hits):
                raise KeyError(f"no image of split {split!r} matches {x!r}")
            out.append(int(hits[0]))
    return out


@torch.no_grad()
def maps_for(model, batch_images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(maps [B, C, h, w], scores [B, C]) of a batch."""
    model.eval()
    out = model(batch_images.to(next(model.parameters()).device))
    return out["attention"].float().cpu().numpy(), torch.sigmoid(out["logits"].float()).cpu().numpy()


def selected_maps(params, name: str, manifest, rows: list[int], labels="gt", max_labels: int = 3,
                  split: str = "test") -> dict:
    """Maps of chosen labels on chosen images: ``labels`` is "gt" (ground truth), "top" (best scores) or
    a list of label names.  Returns images (PIL), maps [k, h, w] per image, titles "label score", grid."""
    model = load_for_maps(params, name, manifest)
    columns = scored_labels(params, name, manifest, model)          # manifest index of each model column
    column_of = {int(label): j for j, label in enumerate(columns)}
    objects = set(manifest.object_indices.tolist())
    ds = MultiLabelDataset(manifest, split, build_transform(method_params(params, name).input, train=False))
    maps, scores = maps_for(model, torch.stack([ds[i]["image"] for i in rows]))
    pos = manifest.split(split)["pos"]
    out = {"images": [], "maps": [], "titles": [], "grid": tuple(maps.shape[2:])}
    for r, m, s in zip(rows, maps, scores):
        if labels == "gt":        # the objects in the image (a tag such as "red" has no place to point at)
            cols = [column_of[int(l)] for l in pos.iloc[r] if int(l) in objects and int(l) in column_of][:max_labels]
        elif labels == "top":
            cols = list(np.argsort(-s)[:max_labels])
        else:
            missing = [l for l in labels if l not in manifest.label_names
                       or manifest.label_names.index(l) not in column_of]
            if missing:
                raise KeyError(f"{name} does not score {missing} (it scores {len(columns)} labels: "
                               f"its label_subset {params.methods[name].label_subset!r})")
            cols = [column_of[manifest.label_names.index(l)] for l in labels][:max_labels]
        out["images"].append(ds.load_image(r))
        out["maps"].append(m[cols])
        out["titles"].append([f"{manifest.label_names[columns[c]]} {s[c]:.2f}" for c in cols])
    return out


def peak_inside(amap: np.ndarray, boxes: list) -> tuple[bool, float]:
    """(peak cell centre inside one of the boxes, share of cell centres inside them) on a [h, w] map;
    boxes are normalised (x0, y0, x1, y1)."""
    h, w = amap.shape
    ys, xs = (np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w
    inside = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in boxes:
        inside |= ((ys[:, None] >= y0) & (ys[:, None] <= y1)) & ((xs[None, :] >= x0) & (xs[None, :] <= x1))
    r, c = np.unravel_index(int(np.argmax(amap)), amap.shape)
    return bool(inside[r, c]), float(inside.mean())


def pointing_game(maps: np.ndarray, box_labels: list, boxes: list, columns: list[int]) -> dict:
    """Pointing game over images: ``maps`` [N, C, h, w] with columns = manifest label indices."""
    col_of = {lab: j for j, lab in enumerate(columns)}
    hits, chance, total = 0, 0.0, 0
    for amaps, labs, bxs in zip(maps, box_labels, boxes):
        if labs is None or len(labs) == 0:
            continue
        labs = np.asarray(labs)
        bxs = np.asarray(list(bxs), dtype=np.float64).reshape(-1, 4)
        for lab in np.unique(labs):
            if int(lab) not in col_of:
                continue
            hit, share = peak_inside(amaps[col_of[int(lab)]], bxs[labs == lab])
            hits += hit
            chance += share
            total += 1
    return {"pairs": total, "hits": hits, "score": hits / total if total else float("nan"),
            "chance": chance / total if total else float("nan")}


def pointing_game_for_run(params, name: str, split: str = "test", device: str = "cpu", progress: bool = True
                          ) -> dict:
    """Pointing game of a finished run on a split with boxes; written to ``<run>/<method>/metrics_pointing.json``."""
    manifest = prepare_data(params, progress=False)
    df = manifest.split(split)
    if "boxes" not in df:
        raise ValueError(f"{manifest.root}: split {split!r} has no boxes: the pointing game needs object boxes")
    mp = method_params(params, name)
    model = load_for_maps(params, name, manifest, device)
    ds = MultiLabelDataset(manifest, split, build_transform(mp.input, train=False))
    all_maps = []
    loader = make_loader(ds, mp.train.eval_batch_size, shuffle=False)
    for batch in progress_bar(loader, desc=f"maps {name}", leave=False, disable=not progress):
        all_maps.append(maps_for(model, batch["image"])[0])
    maps = np.concatenate(all_maps)
    result = {"method": name, "split": split, "grid": list(maps.shape[2:]),
              **pointing_game(maps, df["box_labels"].tolist(), df["boxes"].tolist(),
                               scored_labels(params, name, manifest, model).tolist())}
    atomic_write_json(params.run_dir / name / "metrics_pointing.json", result)
    return result
