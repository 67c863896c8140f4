"""The command-line arguments every kit command shares (``mlc ...``, ``python -m mlc.train``)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from mlc.config.params import load_params


def add_params_arguments(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """PARAMS (optional when there is a ``default``), ``--set KEY=VALUE ...`` and ``--output-root DIR``."""
    if default is None:
        p.add_argument("params", type=Path, help="a params file (YAML), e.g. params/toy.yaml")
    else:
        p.add_argument("params", type=Path, nargs="?", default=Path(default), help=f"a params file (default {default})")
    p.add_argument("--set", dest="set_args", metavar="KEY=VALUE", nargs="+", default=[], action="extend",
                   help="override a params value, e.g. --set methods.q2l.train.lr=1e-4 data.raw_root=/data/coco")
    p.add_argument("--output-root", default=None, help="where runs are written (default: the params' "
                   "output_root, or $MLC_OUTPUT_ROOT)")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """``--method M`` and ``--devices N`` (what ``mlc train`` and ``python -m mlc.train`` take)."""
    p.add_argument("--method", required=True, help="a method name under 'methods' in the params")
    p.add_argument("--devices", type=int, default=None, help="GPUs (processes) to train on: above 1 this launches "
                   "torchrun on this node (the same as --set methods.M.train.devices=N)")


def train_set_args(args) -> list[str]:
    """``--set`` of a train command, with ``--devices`` turned into its params key."""
    extra = [f"methods.{args.method}.train.devices={args.devices}"] if args.devices else []
    return [*args.set_args, *extra]


def load_from_args(args):
    """The params of parsed arguments; the process moves to the params' base folder, so that model-level
    paths (weight files, embedding tables) resolve as the params' own do.  ``--output-root`` is a path of the
    command line: a relative one is relative to the folder the command runs in, as every argument path is."""
    output_root = str(Path(args.output_root).expanduser().resolve()) if args.output_root else None
    params = load_params(args.params, set_args=args.set_args, output_root=output_root)
    os.chdir(params.base_dir)
    return params


def add_run_all_arguments(p: argparse.ArgumentParser) -> None:
    """What ``run_all.sh`` / ``mlc run-all`` take: PARAMS (default: the toy world), ``--only``, ``--jobs``,
    ``--set``, ``--output-root``."""
    add_params_arguments(p, default="params/toy.yaml")
    p.add_argument("--only", nargs="*", help="run only the notebooks whose names contain one of these")
    p.add_argument("--jobs", type=int, default=None,
                   help="notebooks run at once, each on cores / jobs threads (default: one per core, up to as "
                        "many as can run together; 1 with a GPU; 1: in name order on every core)")
