"""QKS's own figure: which of its shared queries wins the positive labels."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from mlc.notebook.figures import ONE_COLUMN


def query_usage(counts: np.ndarray, title: str = "which query wins the positive labels"):
    """Bar chart of how often each query token is the arg-max for a positive label (QKS)."""
    fig, ax = plt.subplots(figsize=(ONE_COLUMN, 2.0))
    ax.bar(np.arange(len(counts)), counts, color=sns.color_palette("colorblind")[2])
    ax.set(xlabel="query token", ylabel="positive labels won", title=title)
    ax.set_xticks(np.arange(len(counts)))
    fig.tight_layout()
    return fig
