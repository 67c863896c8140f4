"""The kit's command line: ``mlc <command> PARAMS [options]``.

    mlc train      params/toy.yaml --method q2l [--set methods.q2l.train.lr=2e-4 ...]
    mlc evaluate   params/toy.yaml --method q2l         (test metrics of a finished run)
    mlc evaluate   params/released/q2l_coco_r101_448.yaml   (the authors' released weights)
    mlc predict    params/toy.yaml --method q2l photo.jpg [--top-k 3] [--heatmaps maps/] [--json]
    mlc config     params/toy.yaml [--set ...] [--method q2l]   (the resolved params, and where each value is from)
    mlc embeddings params/salgl/coco_r101_448.yaml      (the label-embedding tables the params need)
    mlc run-all    params/toy.yaml [--only 10_ 20_]     (every notebook through papermill)
    mlc weights    params/q2l/coco_r101_448.yaml [--list]   (the pretrained weights it needs; fetch them)
    mlc launch     slurm params/q2l/coco_r101_448.yaml --method q2l --nodes 2 --gpus-per-node 8
    mlc --version

Every command takes ``--set KEY=VALUE`` overrides (validated like the file; errors name the command
line) and ``--output-root DIR`` (or ``$MLC_OUTPUT_ROOT``).  Params values may use ``${env:NAME}``.
Relative paths in a params file resolve against the kit checkout that holds it, whatever the current
folder.  ``python -m mlc.train | evaluate | predict | weights | launch | pipeline`` keep working.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from mlc.cli.args import (
    add_config_arguments,
    add_evaluate_arguments,
    add_launch_arguments,
    add_params_arguments,
    add_predict_arguments,
    add_run_all_arguments,
    add_train_arguments,
    add_weights_arguments,
    parse,
)

HANDLERS = "mlc.cli.handlers"      # imported when a command runs: torch and the kit load only then


def kit_version() -> str:
    """The installed kit's version (its package metadata)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("mlc-kit")
    except PackageNotFoundError:
        return "unknown (not installed; run scripts/env.sh)"


def build_parser() -> argparse.ArgumentParser:
    """The ``mlc`` argument parser with its subcommands."""
    ap = argparse.ArgumentParser(prog="mlc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"mlc-kit {kit_version()}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("train", help="train one method of a params file (resumes an interrupted run)")
    add_params_arguments(p)
    add_train_arguments(p)
    p.set_defaults(handler="train")
    p = sub.add_parser("evaluate", help="test metrics of finished runs or of a checkpoint file, released weights "
                                        "included (writes metrics_test.json)")
    add_params_arguments(p)
    add_evaluate_arguments(p)
    p.set_defaults(handler="evaluate")
    p = sub.add_parser("predict", help="the top labels of your images with their scores (and a heat map per "
                                       "label), from a trained run or released weights")
    add_params_arguments(p)
    add_predict_arguments(p)
    p.set_defaults(handler="predict")
    p = sub.add_parser("config", help="the resolved params as YAML, with where each value came from (default, "
                                      "file and line, extends, --set, env)")
    add_params_arguments(p)
    add_config_arguments(p)
    p.set_defaults(handler="config")
    p = sub.add_parser("embeddings", help="build the label-embedding tables a params file needs")
    add_params_arguments(p)
    p.add_argument("--encoders", nargs="*", default=None, help="encoders (default: text.encoders of the params)")
    p.set_defaults(handler="embeddings")
    p = sub.add_parser("run-all", help="execute every notebook through papermill for a params file")
    add_run_all_arguments(p)
    p.set_defaults(handler="run_all_notebooks")
    p = sub.add_parser("weights", help="the pretrained weights a params file needs, and where they are; fetch the "
                                       "missing ones")
    add_params_arguments(p)
    add_weights_arguments(p)
    p.set_defaults(handler="weights")
    p = sub.add_parser("launch", help="submit a training to SLURM (submitit)")
    add_launch_arguments(p)
    p.set_defaults(handler="launch")
    return ap


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mlc`` console script."""
    args = parse(build_parser(), argv)
    sys.exit(getattr(importlib.import_module(HANDLERS), args.handler)(args))


def train_main(argv: list[str] | None = None) -> None:
    """Entry point of ``mlc-train`` (same as ``mlc train``)."""
    main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()

