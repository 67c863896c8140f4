"""The command-line arguments every kit command shares (``mlc ...``, ``python -m mlc.train``).  Only argparse:
building a parser imports nothing heavy, so ``mlc --help`` answers at once."""
from __future__ import annotations

import argparse
from pathlib import Path


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


def add_run_all_arguments(p: argparse.ArgumentParser) -> None:
    """What ``run_all.sh`` / ``mlc run-all`` take: PARAMS (default: the toy world), ``--only``, ``--jobs``,
    ``--set``, ``--output-root``."""
    add_params_arguments(p, default="params/toy.yaml")
    p.add_argument("--only", nargs="*", help="run only the notebooks whose names contain one of these")
    p.add_argument("--jobs", type=int, default=None,
                   help="notebooks run at once, each on cores / jobs threads (default: one per core, up to as "
                        "many as can run together; 1 with a GPU; 1: in name order on every core)")


def add_evaluate_arguments(ap: argparse.ArgumentParser) -> None:
    """--method, --checkpoint and --device (shared by ``mlc evaluate`` and ``python -m mlc.evaluate``)."""
    ap.add_argument("--method", nargs="*", default=None,
                    help="methods to evaluate (default: the released one, else every finished one)")
    ap.add_argument("--checkpoint", default=None,
                    help="a kit checkpoint or an official released file (Q2L checkpoint.pkl, SALGL ema_best_model.pth, "
                         "SGRE best_ema_model.pth, MKT model_*.pth, QKS best_model.pth)")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: the params' train.device)")
