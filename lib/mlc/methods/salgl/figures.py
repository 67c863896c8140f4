"""SALGL's own figures: discovered against true scenes, and the per-scene label graphs it learned."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from mlc.notebook.figures import ONE_COLUMN, TWO_COLUMN, scene_share_weights


def scene_contingency(table: pd.DataFrame, title: str = "true vs discovered scenes (test)"):
    """Heatmap of images per (true scene, discovered scene), each row normalised to sum 1."""
    share = table.div(table.sum(1), axis=0)
    fig, ax = plt.subplots(figsize=(ONE_COLUMN * 1.25, ONE_COLUMN))
    sns.heatmap(share, ax=ax, vmin=0, vmax=1, cmap="rocket_r", annot=table.to_numpy(), fmt="d",
                annot_kws={"fontsize": 7}, cbar_kws={"label": "share of the true scene's images"})
    ax.set(xlabel="discovered scene", ylabel="true scene", title=title)
    fig.tight_layout()
    return fig


def transition_matrices(prob: np.ndarray, names: list[str], labels: list[int] | None = None,
                        titles: list[str] | None = None, zero_diagonal: bool = True, cols: int = 3):
    """One P(column | row) heatmap per scene from [S, C, C] transition matrices, for a label subset.

    ``zero_diagonal`` hides the trivial P(a | a) = 1, as the official SALGL heatmap script does.
    """
    labels = list(range(prob.shape[-1])) if labels is None else list(labels)
    sub = prob[:, labels][:, :, labels].copy()
    if zero_diagonal:
        sub[:, np.arange(len(labels)), np.arange(len(labels))] = 0
    n = len(sub)
    cols = min(cols, n)
    rows = int(np.ceil(n / cols))
    ticks = [names[i] for i in labels] if len(labels) <= 12 else False
    fig, axes = plt.subplots(rows, cols, figsize=(TWO_COLUMN, TWO_COLUMN / cols * rows * (1.25 if ticks else 1.0)),
                             squeeze=False, layout="constrained")
    for s, ax in enumerate(axes.flat):
        if s >= n:
            ax.axis("off")
            continue
        sns.heatmap(sub[s], ax=ax, vmin=0, vmax=1, cmap="rocket_r", square=True, cbar=False,
                    xticklabels=ticks, yticklabels=ticks if s % cols == 0 else False)
        ax.set_title(titles[s] if titles else f"scene {s}", fontsize=8)
        if ticks:
            ax.tick_params(labelsize=6, length=0)
    fig.colorbar(plt.cm.ScalarMappable(cmap="rocket_r", norm=plt.Normalize(0, 1)), ax=axes, shrink=0.6,
                 label="P(column | row)")
    return fig


def scene_label_weights(comatrix: np.ndarray) -> np.ndarray:
    """SALGL's label-cloud weights [S, C]; n_s(c) is the diagonal of scene s's co-occurrence memory."""
    return scene_share_weights(np.stack([np.diag(m) for m in np.asarray(comatrix, dtype=np.float64)]))
