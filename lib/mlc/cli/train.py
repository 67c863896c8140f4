"""``mlc train`` / ``python -m mlc.train PARAMS --method M [--set KEY=VALUE ...]``: train one method of a run."""
from __future__ import annotations

import argparse
import sys

from mlc.cli.args import add_params_arguments, add_train_arguments, parse, train_set_args
from mlc.cli.load import load_from_args
from mlc.config.params import ParamsError
from mlc.runs.train import run_training


def main(argv=None) -> None:
    """``python -m mlc.train PARAMS --method M [--set KEY=VALUE ...]`` (the same as ``mlc train``)."""
    ap = argparse.ArgumentParser(prog="python -m mlc.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_arguments(ap)
    add_train_arguments(ap)
    args = parse(ap, argv)
    args.set_args = train_set_args(args)
    try:
        params = load_from_args(args)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_training(params, args.method))


if __name__ == "__main__":
    main()
