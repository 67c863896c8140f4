"""Helpers for the notebooks: find the repository, load the params, set the figure style."""
from __future__ import annotations

import os
from pathlib import Path

from mlc.config.params import RunParams, find_checkout, load_params
from mlc.engine import logs
from mlc.notebook import figures, run_page
from mlc.notebook.figures import set_style


def repo_root(start: Path | None = None) -> Path:
    """The kit's root (the folder with pyproject.toml and notebooks/), from the working directory up."""
    here = (start or Path.cwd()).resolve()
    root = find_checkout(here)
    if root is None:
        raise FileNotFoundError(f"no mlc-kit checkout above {here} (looked for pyproject.toml and notebooks/)")
    return root


def setup(params_file: str, devices: int = 1) -> RunParams:
    """Run from the repository root (so relative paths in params work from JupyterLab too) and load params.
    ``devices`` above 1 trains every method on that many GPUs (processes): ``train_method`` then launches
    torchrun and streams its progress into the notebook (see :mod:`mlc.runs.torchrun`)."""
    root = repo_root()
    os.chdir(root)
    set_style()
    params = load_params(params_file)
    if devices > 1:
        for mp in params.methods.values():
            mp.train.devices = int(devices)
    (params.run_dir / "figures").mkdir(parents=True, exist_ok=True)
    return params


def figure_path(params: RunParams, name: str) -> Path:
    """Path (without suffix) of a figure in the run's figures folder."""
    return params.run_dir / "figures" / name


def save_table(params: RunParams, name: str, table) -> Path:
    """Save a results table of the run as ``tables/<name>.csv`` (the run's front page shows ``results`` and
    ``claims``; a paper's own tables start from these files)."""
    return run_page.save_table(params.run_dir, name, table)


def save_run_figure(params: RunParams, method: str, fig, name: str, file_name: str | None = None) -> list[Path]:
    """Save a figure of one method's run into the run's figures folder (PNG and PDF, as
    ``<file_name or method_name>``) and, when the params log to TensorBoard, into the method's TensorBoard run as
    the image ``figures/<name>`` (tab IMAGES, beside its curves)."""
    paths = figures.save_figure(fig, figure_path(params, file_name or f"{method}_{name}"))
    if params.log.tensorboard and (params.run_dir / method).is_dir():
        logs.log_figure(params.run_dir / method, f"figures/{name}", fig)
    return paths
