"""Helpers for the notebooks: find the repository, load the params, set the figure style."""
from __future__ import annotations

import os
from pathlib import Path

from .figures import set_style
from .params import RunParams, load_params


def repo_root(start: Path | None = None) -> Path:
    """The kit's root (the folder with pyproject.toml and notebooks/), from the working directory up."""
    here = (start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").is_file() and (p / "notebooks").is_dir():
            return p
    raise FileNotFoundError(f"no mlc-kit checkout above {here} (looked for pyproject.toml and notebooks/)")


def setup(params_file: str) -> RunParams:
    """Run from the repository root (so relative paths in params work from JupyterLab too) and load params."""
    root = repo_root()
    os.chdir(root)
    set_style()
    params = load_params(params_file)
    (params.run_dir / "figures").mkdir(parents=True, exist_ok=True)
    return params


def figure_path(params: RunParams, name: str) -> Path:
    """Path (without suffix) of a figure in the run's figures folder."""
    return params.run_dir / "figures" / name
