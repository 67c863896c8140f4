"""The command-line arguments every kit command shares (``mlc ...``, ``python -m mlc.train``).  Only argparse:
building a parser imports nothing heavy, so ``mlc --help`` answers at once."""
from __future__ import annotations

import argparse
from pathlib import Path


class _SetValues(argparse.Action):
    """``--set KEY=VALUE ...``: a value without ``=`` is not an override but the params file that followed the
    overrides (``mlc train --set a=1 params/toy.yaml``); :func:`parse` puts it in its place."""

    def __call__(self, parser, namespace, values, option_string=None):
        overrides = list(getattr(namespace, self.dest, None) or [])
        for value in values:
            if "=" in value:
                overrides.append(value)
            else:
                namespace._stray = [*getattr(namespace, "_stray", []), value]
        setattr(namespace, self.dest, overrides)


def add_params_arguments(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """PARAMS (optional when there is a ``default``), ``--set KEY=VALUE ...`` and ``--output-root DIR``, in any
    order (see :func:`parse`)."""
    p.add_argument("params", type=Path, nargs="?", default=None,
                   help="a params file (YAML), e.g. params/toy.yaml" if default is None else
                   f"a params file (default {default})")
    p.set_defaults(_params_default=default)
    p.add_argument("--set", dest="set_args", metavar="KEY=VALUE", nargs="+", default=[], action=_SetValues,
                   help="override a params value, e.g. --set methods.q2l.train.lr=1e-4 data.raw_root=/data/coco")
    p.add_argument("--output-root", default=None, help="where runs are written (default: the params' "
                   "output_root, or $MLC_OUTPUT_ROOT)")


def parse(ap: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``ap.parse_args`` with the params file found wherever it stands: ``--set`` takes every word after it, so a
    params file written after the overrides arrives among them, and is put back in its place here."""
    args = ap.parse_args(argv)
    if not hasattr(args, "_params_default"):
        return args
    stray = getattr(args, "_stray", [])
    if args.params is None and len(stray) == 1:
        args.params, stray = Path(stray[0]), []
    if stray:
        ap.error(f"--set takes KEY=VALUE, got {stray[0]!r}")
    if args.params is None:
        if args._params_default is None:
            ap.error("the following arguments are required: params")
        args.params = Path(args._params_default)
    return args


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


def add_weights_arguments(p: argparse.ArgumentParser) -> None:
    """What ``mlc weights`` and ``python -m mlc.weights`` take besides the params."""
    p.add_argument("--list", action="store_true", help="only list; download nothing")


def add_launch_arguments(ap: argparse.ArgumentParser) -> None:
    """``slurm PARAMS --method M ...``: what ``mlc launch`` and ``python -m mlc.launch`` take."""
    sub = ap.add_subparsers(dest="launcher", required=True)
    sl = sub.add_parser("slurm", help="submit a training job to SLURM with submitit (requeued on preemption)")
    sl.add_argument("params", help="the params file")
    sl.add_argument("--method", required=True)
    sl.add_argument("--nodes", type=int, default=1)
    sl.add_argument("--gpus-per-node", type=int, default=1)
    sl.add_argument("--tasks-per-node", type=int, default=None, help="processes per node (default: one per GPU)")
    sl.add_argument("--partition", default=None)
    sl.add_argument("--time", type=int, default=1440, help="the job's time limit in minutes")
    sl.add_argument("--cpus-per-task", type=int, default=None)
    sl.add_argument("--mem-gb", type=int, default=None)
    sl.add_argument("--folder", default=None, help="submitit's log folder (default <run>/<method>/submitit/%%j)")
    sl.add_argument("--executor", default="slurm", choices=["slurm", "local"],
                    help="local: run through submitit's local executor (no SLURM), e.g. to try a job")
    sl.add_argument("--set", dest="set_args", action="append", default=[], metavar="KEY=VALUE")
    sl.add_argument("--wait", action="store_true", help="wait for the job and print its test metrics")
