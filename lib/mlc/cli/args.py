"""The command-line arguments every kit command shares (``mlc ...``, ``python -m mlc.train``).  Only argparse:
building a parser imports nothing heavy, so ``mlc --help`` answers at once."""
from __future__ import annotations

import argparse
import sys
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
    p.set_defaults(_params_default=default, _parser=p)
    p.add_argument("--set", dest="set_args", metavar="KEY=VALUE", nargs="+", default=[], action=_SetValues,
                   help="override a params value, e.g. --set methods.q2l.train.lr=1e-4 data.raw_root=/data/coco")
    p.add_argument("--output-root", default=None, help="where runs are written (default: the params' "
                   "output_root, or $MLC_OUTPUT_ROOT)")


def add_image_arguments(p: argparse.ArgumentParser) -> None:
    """IMAGE ...: files or folders, anywhere among the options (``mlc predict PARAMS --method M a.jpg b.jpg``);
    :func:`parse` gathers them."""
    p.add_argument("images", nargs="*", default=[], metavar="IMAGE",
                   help="image files or folders (every image inside, sorted), after the params file")
    p.set_defaults(_words="images", _words_metavar="IMAGE")


def parse(ap: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``ap.parse_args`` with the params file found wherever it stands: ``--set`` takes every word after it, so a
    params file written after the overrides arrives among them, and is put back in its place here.  A command
    that takes more words (``mlc predict``'s images) gets every word after the params file, in the order
    given.  Errors print the usage of the (sub)command they are about."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = ap.parse_known_args(argv)
    parser = getattr(args, "_parser", ap)
    words = getattr(args, "_words", None)
    if extra and (words is None or any(e.startswith("-") and e != "-" for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not hasattr(args, "_params_default"):
        return args
    stray = getattr(args, "_stray", [])
    if words is not None:
        given = [*([str(args.params)] if args.params is not None else []), *map(str, getattr(args, words)), *extra]
        if stray:                                      # words --set took: put every word back in its place
            given = _in_order([*given, *stray], argv)
        if len(given) < 2:
            parser.error(f"the following arguments are required: {'params, ' if not given else ''}"
                         f"{args._words_metavar}")
        args.params = Path(given[0])
        setattr(args, words, given[1:])
        stray = []
    if args.params is None and len(stray) == 1:
        args.params, stray = Path(stray[0]), []
    if stray:
        parser.error(f"--set takes KEY=VALUE, got {stray[0]!r}")
    if args.params is None:
        if args._params_default is None:
            parser.error("the following arguments are required: params")
        args.params = Path(args._params_default)
    return args


def _in_order(words: list[str], argv: list[str]) -> list[str]:
    """``words`` (each a word of ``argv``, argparse having split them between arguments) in ``argv``'s order."""
    taken: set[int] = set()
    placed = []
    for w in words:
        i = next((i for i, a in enumerate(argv) if i not in taken and (a == w or Path(a) == Path(w))), len(argv))
        taken.add(i)
        placed.append((i, w))
    return [w for _, w in sorted(placed, key=lambda t: t[0])]


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


def _top_k(text: str) -> int:
    k = int(text) if text.strip().lstrip("-").isdigit() else -1
    if k < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0 (0: every label), got {text!r}")
    return k


def _probability(text: str) -> float:
    try:
        q = float(text)
    except ValueError:
        q = float("nan")
    if not 0 <= q <= 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return q


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    """IMAGE ... and the options of ``mlc predict`` / ``python -m mlc.predict`` besides the params."""
    add_image_arguments(p)
    p.add_argument("--method", default=None,
                   help="the method whose model predicts (default: the released one, else the one a --checkpoint "
                        "is for, else the run's only finished one)")
    p.add_argument("--checkpoint", default=None,
                   help="weights from this file instead of the run's best.pt: a kit checkpoint or an official "
                        "released file, as mlc evaluate takes it")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: the params' train.device)")
    p.add_argument("--top-k", type=_top_k, default=5, metavar="K",
                   help="labels per image, highest score first (default 5; 0: every label)")
    p.add_argument("--threshold", type=_probability, default=None, metavar="P",
                   help="only labels whose score (sigmoid probability) is at least P")
    p.add_argument("--heatmaps", default=None, metavar="DIR",
                   help="write one PNG per image and label into DIR: the label's map over the image")
    p.add_argument("--json", action="store_true", help="print JSON (method, weights, and per image its labels "
                                                       "with scores and heat-map files) instead of text")


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """What ``mlc config`` takes besides the params."""
    p.add_argument("--method", default=None, help="show only this method (its params as its training uses them)")
    p.add_argument("--no-origins", dest="origins", action="store_false",
                   help="the YAML alone, without where each value came from")


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
    sl.set_defaults(_parser=sl)
