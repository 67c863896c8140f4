"""What each ``mlc`` subcommand does, imported only when that command runs (:mod:`mlc.cli.command` names
these functions by their path, so that its parser stays light)."""
from __future__ import annotations

import sys

from mlc.cli.args import train_set_args
from mlc.cli.config import run_config
from mlc.cli.evaluate import run_evaluation
from mlc.cli.launch import run_launch
from mlc.cli.load import load_from_args
from mlc.cli.predict import run_predict
from mlc.cli.run_all import run_all_from_args
from mlc.cli.weights import run_weights
from mlc.config.params import ParamsError
from mlc.runs.embeddings import build_run_embeddings
from mlc.runs.train import run_training


def _with_params_errors(run) -> int:
    try:
        return run()
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def train(args) -> int:
    """``mlc train``."""
    args.set_args = train_set_args(args)
    return _with_params_errors(lambda: run_training(load_from_args(args), args.method))


def evaluate(args) -> int:
    """``mlc evaluate``."""
    return _with_params_errors(lambda: run_evaluation(load_from_args(args), args.method, args.checkpoint,
                                                      args.device))


def embeddings(args) -> int:
    """``mlc embeddings``."""
    def run() -> int:
        params = load_from_args(args)
        if not build_run_embeddings(params, args.encoders):
            print(f"{params.source}: no encoders (text.encoders is empty and none were given with --encoders)")
        return 0
    return _with_params_errors(run)


def run_all_notebooks(args) -> int:
    """``mlc run-all`` (a relative ``--output-root`` is relative to the current folder, as for every command)."""
    return run_all_from_args(args)


def predict(args) -> int:
    """``mlc predict``."""
    return run_predict(args)


def config(args) -> int:
    """``mlc config``."""
    return run_config(args)


def weights(args) -> int:
    """``mlc weights``."""
    return run_weights(args)


def launch(args) -> int:
    """``mlc launch``."""
    return run_launch(args)
