"""Paper-ready figures. Every figure is saved as PNG (200 dpi) and PDF (vector, TrueType fonts embedded).

Sizes follow two-column paper layouts: ``ONE_COLUMN`` (3.4 in) and ``TWO_COLUMN`` (7.0 in) wide.
The palette is seaborn's colour-blind-safe one; sequential maps are "viridis"/"rocket".
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from mlc.data.toyworld import context_oracles, world_statistics

ONE_COLUMN, TWO_COLUMN = 3.4, 7.0
PNG_DPI = 200                # the PNG copies; rasters drawn into figures (word clouds) are rendered for it


def set_style() -> None:
    """The kit's figure style: paper sizes, colour-blind-safe palette, embedded TrueType fonts."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.1)
    matplotlib.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42, "savefig.bbox": "tight",
                                "figure.dpi": 100, "axes.titlesize": 10, "axes.labelsize": 9})


def save_figure(fig, stem: str | Path) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf``; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=PNG_DPI)
    fig.savefig(paths[1])
    return paths


def sample_grid(manifest, split: str = "train", n: int = 16, cols: int = 8, boxes: bool = True):
    """Images with their object labels (a manifest's tags left out) and object boxes where the manifest has them."""
    from PIL import Image
    df = manifest.split(split).head(n)
    objects = set(manifest.object_indices.tolist())
    df = df.assign(pos=[[i for i in p if i in objects] for p in df["pos"]])
    rows = int(np.ceil(len(df) / cols))
    # every row gets room for the longest title of the grid (up to 4 label lines + "+k more")
    lines = max([min(len(p), 4) + (len(p) > 4) for p in df["pos"]] + [1])
    cell, line = TWO_COLUMN / cols, 6.5 * 1.25 / 72
    fig, axes = plt.subplots(rows, cols, figsize=(TWO_COLUMN, rows * (cell + lines * line + 0.06)), squeeze=False,
                             gridspec_kw={"hspace": (lines * line + 0.06) / cell})
    palette = sns.color_palette("colorblind", 10)
    names = manifest.label_names
    for ax, (_, row) in zip(axes.flat, df.iterrows()):
        img = Image.open(manifest.image_root / row["image"]).convert("RGB")
        ax.imshow(img)
        w, h = img.size
        if boxes and "boxes" in row and row["boxes"] is not None:
            for j, (lab, box) in enumerate(zip(row["box_labels"], row["boxes"])):
                x0, y0, x1, y1 = np.asarray(box) * [w, h, w, h]
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.2,
                                           ec=palette[j % len(palette)]))
        pos = [names[i] for i in row["pos"]]
        ax.set_title("\n".join(pos[:4] + ([f"+{len(pos) - 4} more"] if len(pos) > 4 else [])), fontsize=6.5)
    for ax in axes.flat:
        ax.axis("off")
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=1 - (lines * line + 0.04) / fig.get_figheight(),
                        wspace=0.05)
    return fig


def labelled_images(images: np.ndarray, titles: list[str], cols: int = 8):
    """uint8 images [N, H, W, 3] in a grid, each titled (e.g. the toy ImageNet's single objects and classes)."""
    rows = int(np.ceil(len(images) / cols))
    cell = TWO_COLUMN / cols
    fig, axes = plt.subplots(rows, cols, figsize=(TWO_COLUMN, rows * (cell + 0.18)), squeeze=False)
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=6.5)
    for ax in axes.flat:
        ax.axis("off")
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=0.93, wspace=0.05, hspace=0.3)
    return fig


def world_conditions(manifest, split: str = "train"):
    """Three conditions of the toy world at a glance: object sizes against COCO's small / medium / large shares,
    how often a caption names an object of each size, and how often a small object is named right from its colour
    alone and from its colour and scene (``mlc.data.toyworld.world_statistics`` has the numbers)."""
    stats = world_statistics(manifest, split).set_index("statistic")["toy world"]
    oracles = context_oracles(manifest, "val" if "val" in manifest.split_names else split)
    df = manifest.split(split)
    size = manifest.meta.get("image_size") or int(df["width"].iloc[0])
    sides = np.concatenate([np.asarray(v, dtype=float) for v in df["box_sizes"]]) * size
    edges = [b[1] * size for b in manifest.meta["size_bins"][:-1]]
    palette = sns.color_palette("colorblind")
    fig, axes = plt.subplots(1, 3, figsize=(TWO_COLUMN, 2.6), gridspec_kw={"width_ratios": [1.6, 1, 1]})
    ax = axes[0]
    ax.hist(sides, bins=30, color=palette[0])
    for e in edges:
        ax.axvline(e, color="k", lw=0.8, ls="--")
    shares = [stats[f"% of labelled objects {b}"] for b in ("small", "medium", "large")]
    ax.set(xlabel=f"object side (pixels of {size})", ylabel="labelled objects",
           title="sizes " + " / ".join(f"{s:.0f}" for s in shares) + " %\n(COCO: 41 / 34 / 24 %)")
    ax = axes[1]
    named = [stats.get(f"% of labels named, largest instance {b}", np.nan) for b in ("small", "medium", "large")]
    ax.bar(["S", "M", "L"], named, color=palette[1])
    ax.set(ylim=(0, 100), xlabel="object size", ylabel="% named in its caption", title="captions name\nlarge objects")
    ax = axes[2]
    ax.bar(["colour", "colour\n+ scene"], [100 * oracles["appearance only"], 100 * oracles["appearance + scene"]],
           color=palette[2])
    ax.set(ylim=(0, 100), ylabel="% of small objects named right", title="context decides\nwhat colour cannot")
    fig.tight_layout()
    return fig


def label_frequencies(manifest, split: str = "train", top: int | None = None, labels: list[int] | None = None):
    """Positive images per label of ``labels`` (default: the object labels; a manifest's tags would swamp them:
    every toy image has its scene tag), sorted.  Up to 60 labels: named bars (seen / unseen coloured);
    more (COCO, NUS-WIDE, Open Images): the long tail as a rank-frequency curve on log axes."""
    labels = manifest.object_indices if labels is None else np.asarray(labels, dtype=np.int64)
    counts = manifest.label_counts(split)[labels]
    freq = pd.Series(counts, index=labels).sort_values(ascending=False)
    if top:
        freq = freq.head(top)
    n_images = len(manifest.split(split))
    fig, ax = plt.subplots(figsize=(TWO_COLUMN, 2.4))
    if len(freq) > 60:
        ax.loglog(np.arange(1, len(freq) + 1), np.maximum(freq.values, 0.8), lw=1.5)
        ax.set(xlabel="label rank", ylabel=f"images ({split})")
        ax.set_title(f"Label frequencies ({split}, {n_images} images, {len(freq)} labels): the long tail")
        fig.tight_layout()
        return fig
    seen = [manifest.labels[i].seen for i in freq.index]
    colours = [sns.color_palette("colorblind")[0 if s else 1] for s in seen]
    ax.bar(range(len(freq)), freq.values, color=colours)
    ax.set_xticks(range(len(freq)), [manifest.label_names[i] for i in freq.index], rotation=90, fontsize=7)
    ax.set_ylabel(f"images ({split})")
    ax.set_title(f"Label frequencies ({split}, {n_images} images)")
    if not all(seen):
        ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=sns.color_palette("colorblind")[i]) for i in (0, 1)],
                  labels=["seen", "unseen"], fontsize=7)
    fig.tight_layout()
    return fig


def labels_per_image(manifest, split: str = "train"):
    """Histogram of the number of positive object labels per image (a manifest's tags left out)."""
    n = manifest.labels_per_image(split, manifest.object_indices)
    fig, ax = plt.subplots(figsize=(ONE_COLUMN, 2.2))
    bins = np.arange(0, min(int(n.max(initial=0)), 30) + 2) - 0.5
    ax.hist(np.minimum(n, 30), bins=bins, color=sns.color_palette("colorblind")[0])
    ax.set(xlabel="positive labels per image" + (" (30 = 30 or more)" if n.max(initial=0) > 30 else ""),
           ylabel="images", title=f"{split}: mean {n.mean():.2f} labels per image")
    fig.tight_layout()
    return fig


def cooccurrence(manifest, split: str = "train", top: int = 20, labels: list[int] | None = None):
    """P(column | row) over the images of a split for the ``top`` most frequent object labels (or given ones)."""
    if labels is None:
        objects = manifest.object_indices
        labels = list(objects[np.argsort(-manifest.label_counts(split)[objects], kind="stable")[:top]])
    t = manifest.dense_targets(split, labels)
    p = conditional_cooccurrence(t)
    names = [manifest.label_names[i] for i in labels]
    side = min(TWO_COLUMN, 1.2 + 0.22 * len(labels))
    fig, ax = plt.subplots(figsize=(side + 0.8, side))
    sns.heatmap(p, ax=ax, vmin=0, vmax=1, cmap="rocket_r", square=True, xticklabels=names, yticklabels=names,
                cbar_kws={"label": "P(column | row)", "shrink": 0.7})
    ax.tick_params(labelsize=7, length=0)
    ax.set_title(f"Label co-occurrence ({split}, {len(labels)} most frequent labels)")
    fig.tight_layout()
    return fig


def conditional_cooccurrence(targets: np.ndarray) -> np.ndarray:
    """P(b | a) = #(a and b) / #a for a multi-hot matrix [N, C] (rows a, columns b)."""
    y = (np.asarray(targets) == 1).astype(np.float64)
    co = y.T @ y
    return co / np.maximum(np.diag(co)[:, None], 1)


def cooccurrence_by_scene(manifest, split: str = "train", labels: list[int] | None = None):
    """One P(b | a) heatmap per scene (toy world and any manifest with a scene column) over ``labels`` (default:
    the object labels).  Up to 40 labels are named on the outer panels; the colour bar fills the grid's empty
    panel when there is one."""
    df = manifest.split(split)
    t = manifest.dense_targets(split)
    scenes = manifest.meta.get("scenes", sorted(df["scene"].unique()))
    labels = list(manifest.object_indices) if labels is None else labels
    names = [manifest.label_names[i] for i in labels]
    cols = min(len(scenes), 3)
    rows = int(np.ceil(len(scenes) / cols))
    ticks = len(names) <= 40
    tick_size = min(6.0, 130 / max(len(names), 1))
    fig, axes = plt.subplots(rows, cols, figsize=(TWO_COLUMN, TWO_COLUMN / cols * rows * 1.08), squeeze=False)
    for s, ax in zip(range(len(scenes)), axes.flat):
        r, c = divmod(s, cols)
        last_row = s + cols >= len(scenes)
        p = conditional_cooccurrence(t[df["scene"].to_numpy() == s][:, labels])
        sns.heatmap(p, ax=ax, vmin=0, vmax=1, cmap="rocket_r", square=True, cbar=False,
                    xticklabels=names if ticks and last_row else False,
                    yticklabels=names if ticks and c == 0 else False)
        ax.tick_params(labelsize=tick_size, length=0, pad=1)
        ax.set_title(f"{scenes[s]} ({int((df['scene'] == s).sum())} images)", fontsize=7)
    empty = list(axes.flat)[len(scenes):]
    for ax in empty:
        ax.axis("off")
    mappable = plt.cm.ScalarMappable(cmap="rocket_r", norm=plt.Normalize(0, 1))
    fig.tight_layout(pad=0.4, w_pad=0.3, h_pad=0.6)
    if empty:                     # the colour bar in the empty panel, not beside the grid
        box = empty[0].get_position()
        cax = fig.add_axes((box.x0 + 0.15 * box.width, box.y0 + 0.45 * box.height, 0.7 * box.width, 0.06 * box.height))
        fig.colorbar(mappable, cax=cax, orientation="horizontal", label="P(column | row)")
    else:
        fig.colorbar(mappable, ax=axes, shrink=0.6, label="P(column | row)")
    return fig


def learning_curves(history: list[dict], title: str = ""):
    """Loss and val mAP (live and EMA) per epoch, one panel each; a series keeps its colour in both panels,
    epochs are whole numbers, and the loss axis is logarithmic when the losses span more than a decade."""
    from matplotlib.ticker import MaxNLocator
    h = pd.DataFrame(history)
    colours = dict(zip(("train", "live", "ema"), sns.color_palette("colorblind", 3)))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(TWO_COLUMN, 2.4))
    x = h["epoch"] + 1
    ax1.plot(x, h["train_loss"], marker="o", ms=3, color=colours["train"], label="train")
    losses = [h["train_loss"].to_numpy(dtype=float)]
    for src in ("live", "ema"):
        if f"val_loss_{src}" in h:
            ax1.plot(x, h[f"val_loss_{src}"], marker="o", ms=3, color=colours[src], label=f"val ({src})")
            ax2.plot(x, 100 * h[f"val_mAP_{src}"], marker="o", ms=3, color=colours[src], label=f"val ({src})")
            losses.append(h[f"val_loss_{src}"].to_numpy(dtype=float))
    best = h["best_epoch"].iloc[-1]
    ax2.axvline(best + 1, color="gray", ls=":", lw=1, label="best")
    values = np.concatenate(losses)
    values = values[np.isfinite(values) & (values > 0)]
    log = len(values) > 0 and values.max() / values.min() > 10
    if log:
        from matplotlib.ticker import NullFormatter
        ax1.set_yscale("log")
        ax1.yaxis.set_minor_formatter(NullFormatter())
    ax1.set(xlabel="epoch", ylabel="loss (log scale)" if log else "loss")
    ax2.set(xlabel="epoch", ylabel="mAP (%)")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(x) == 1:      # one epoch: MaxNLocator finds no two whole numbers and falls back to 0.94, 0.96, ...
            ax.set_xlim(x.iloc[0] - 1, x.iloc[0] + 1)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def per_class_ap(ap: np.ndarray, names: list[str], title: str = ""):
    """Per-class AP as sorted horizontal bars."""
    order = np.argsort(-np.nan_to_num(ap, nan=-1))
    fig, ax = plt.subplots(figsize=(TWO_COLUMN, 2.4))
    ax.bar(range(len(ap)), 100 * np.asarray(ap)[order], color=sns.color_palette("colorblind")[0])
    ax.set_xticks(range(len(ap)), [names[i] for i in order], rotation=90, fontsize=7)
    ax.set(ylabel="AP (%)", ylim=(0, 100), title=title)
    fig.tight_layout()
    return fig


def pr_curves(scores: np.ndarray, targets: np.ndarray, names: list[str], classes: list[int], title: str = ""):
    """Precision-recall curves of the chosen classes."""
    from sklearn.metrics import precision_recall_curve
    fig, ax = plt.subplots(figsize=(ONE_COLUMN * 1.3, ONE_COLUMN * 1.1))
    for c in classes:
        known = targets[:, c] >= 0
        if (targets[known, c] == 1).sum() == 0:
            continue
        p, r, _ = precision_recall_curve(targets[known, c] == 1, scores[known, c])
        ax.plot(r, p, lw=1.3, label=names[c])
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.legend(fontsize=6.5, loc="lower left")
    fig.tight_layout()
    return fig


def loss_terms(history: list[dict], terms: list[str], title: str = ""):
    """Training curves of the parts of a composite loss (e.g. SALGL's ASL and scene entropies)."""
    h = pd.DataFrame(history)
    present = [t for t in terms if f"train_{t}" in h]
    fig, axes = plt.subplots(1, len(present), figsize=(TWO_COLUMN, 2.2), squeeze=False)
    for ax, term in zip(axes[0], present):
        ax.plot(h["epoch"] + 1, h[f"train_{term}"], marker="o", ms=3)
        ax.set(xlabel="epoch", title=term.replace("_", " "))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _upsample(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A [h, w] map bilinearly resized to the image (width, height), values kept (no rescaling)."""
    from PIL import Image
    return np.asarray(Image.fromarray(np.asarray(m, dtype=np.float32), mode="F").resize(size, Image.BILINEAR))


def _figure_scale(maps) -> tuple[float, float]:
    """One colour scale for every map of a figure: a weak map looks weak, a signed one keeps its sign."""
    values = np.concatenate([np.asarray(m, dtype=np.float32).ravel() for m in maps if len(m)])
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    lo = min(lo, 0.0) if lo >= 0 or hi <= 0 else lo      # non-negative weights start at 0
    return lo, hi if hi > lo else lo + 1e-6


def _overlay_colorbar(fig, axes, lo: float, hi: float, label: str) -> None:
    fig.colorbar(plt.cm.ScalarMappable(cmap="magma", norm=plt.Normalize(lo, hi)), ax=axes, shrink=0.8,
                 fraction=0.03, pad=0.01, label=label)


def label_heatmaps(image, maps: np.ndarray, names: list[str], scores: list[float] | None = None,
                   title: str = "", scale_label: str = "attention"):
    """The image, then one overlay per label of a [K, h, w] map (upsampled to the image), titled with the
    label and its probability.  All maps share one colour scale (shown by the colour bar)."""
    img = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image)
    k = len(maps)
    lo, hi = _figure_scale(list(maps))
    fig, axes = plt.subplots(1, k + 1, figsize=(min(TWO_COLUMN, 1.5 * (k + 1) + 0.6), 1.9), squeeze=False)
    axes = axes[0]
    axes[0].imshow(img)
    axes[0].set_title("image", fontsize=7)
    for ax, m, name, j in zip(axes[1:], maps, names, range(k)):
        ax.imshow(img)
        ax.imshow(_upsample(m, img.shape[1::-1]), cmap="magma", alpha=0.55, vmin=lo, vmax=hi)
        ax.set_title(name + (f"\np = {scores[j]:.2f}" if scores is not None else ""), fontsize=7)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    _overlay_colorbar(fig, list(axes), lo, hi, f"{scale_label} (one scale)")
    return fig


def heatmap_grid(images: list, maps: list[np.ndarray], titles: list[list[str]], row_titles: list[str] | None = None,
                 title: str = "", width: float = TWO_COLUMN, max_height: float = 8.5,
                 scale_label: str = "attention"):
    """Rows of (image, one overlay per label).  ``maps[i]`` is [k, h, w] for image i; ``titles[i]`` its k
    label titles.  Maps are upsampled (bilinear) and share one colour scale for the whole figure (the colour
    bar), so a weak map looks weak.  As many rows as fit ``max_height`` inches (a page), said in the title."""
    k = max(len(m) for m in maps)
    cell = width / (k + 1.4)
    shown = max(1, min(len(images), int((max_height - 0.35) / (cell * 1.18))))
    if shown < len(images):
        title = f"{title} (first {shown} of {len(images)} images)"
    images, maps, titles = images[:shown], maps[:shown], titles[:shown]
    lo, hi = _figure_scale([a for m in maps for a in m])
    fig, axes = plt.subplots(shown, k + 1, figsize=(width, cell * shown * 1.18 + 0.35), squeeze=False)
    for i, (image, m, ts) in enumerate(zip(images, maps, titles)):
        img = np.asarray(image.convert("RGB"))
        axes[i, 0].imshow(img)
        axes[i, 0].set_title(row_titles[i] if row_titles else "image", fontsize=6.5)
        for j in range(k):
            ax = axes[i, j + 1]
            if j < len(m):
                ax.imshow(img)
                ax.imshow(_upsample(m[j], img.shape[1::-1]), cmap="magma", alpha=0.55, vmin=lo, vmax=hi)
                ax.set_title(ts[j], fontsize=6.5)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.25 / fig.get_figheight()))
    _overlay_colorbar(fig, list(axes.flat), lo, hi, f"{scale_label} (one scale for the figure)")
    return fig


def scene_share_weights(counts: np.ndarray) -> np.ndarray:
    """Label-cloud weights [S, C] from per-scene label counts: int(200 * n_s(c) / sum_s' n_s'(c)), the share
    of a label's occurrences that fall in each scene (the official labelcloud script's formula)."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.floor(200 * counts / np.maximum(counts.sum(0, keepdims=True), 1e-12)).astype(int)


def _cloud_colour(word, font_size=20, **kwargs) -> str:
    """Dark shades of one sequential map, darker for bigger words: readable in print and for every
    colour vision (word hues would also clash with label names such as "yellow star")."""
    t = 0.55 - 0.4 * min(font_size, 80) / 80
    r, g, b, _ = plt.get_cmap("mako")(t)
    return f"rgb({int(255 * r)}, {int(255 * g)}, {int(255 * b)})"


def word_clouds(weights: np.ndarray, names: list[str], titles: list[str], cols: int = 3, max_words: int = 80,
                seed: int = 0):
    """One word cloud per row of ``weights`` [K, C] (labels with weight 0 left out); returns (figure, clouds)."""
    from wordcloud import WordCloud
    k = len(weights)
    cols = min(cols, k)
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(TWO_COLUMN, TWO_COLUMN / cols * 0.62 * rows + 0.2),
                             squeeze=False)
    clouds = []
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= k:
            continue
        freqs = {n: float(w) for n, w in zip(names, weights[i]) if w > 0}
        if not freqs:
            ax.set_title(f"{titles[i]} (empty)", fontsize=8)
            clouds.append(None)
            continue
        # rendered at the size it is printed (the panel's width at the PNG's dpi), never stretched
        px = int(TWO_COLUMN / cols * PNG_DPI)
        wc = WordCloud(width=px, height=px // 2, background_color="white", max_words=max_words, random_state=seed,
                       prefer_horizontal=0.95, color_func=_cloud_colour).generate_from_frequencies(freqs)
        clouds.append(wc)
        ax.imshow(wc.to_array(), interpolation="none")
        ax.set_title(titles[i], fontsize=8)
    fig.tight_layout(pad=0.4)
    return fig, clouds


def cluster_order(matrix: np.ndarray) -> list[int]:
    """Row order from average-linkage hierarchical clustering of a (co-occurrence) matrix's rows."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    if len(matrix) < 3:
        return list(range(len(matrix)))
    profile = np.asarray(matrix, dtype=np.float64)
    return list(leaves_list(linkage(profile + profile.T, method="average", metric="euclidean")))
