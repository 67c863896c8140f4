"""``python -m mlc.weights PARAMS [--fetch]``: the pretrained weights a run needs, and where they are."""
from __future__ import annotations

import argparse
import sys

from mlc.cli.args import add_params_arguments, add_weights_arguments, parse
from mlc.cli.load import load_from_args
from mlc.config.params import ParamsError
from mlc.core.online import offline
from mlc.runs.weights import fetch_missing, needed_weights, table


def main(argv=None) -> int:
    """``python -m mlc.weights PARAMS_FILE [--list]``: list, then fetch what is missing (exit 1 if some remain)."""
    ap = argparse.ArgumentParser(prog="python -m mlc.weights", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_arguments(ap)
    add_weights_arguments(ap)
    return run_weights(parse(ap, argv))


def run_weights(args) -> int:
    """List the weights the parsed params need, then (unless ``--list``) fetch the missing ones."""
    try:
        params = load_from_args(args)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    weights = needed_weights(params)
    if not weights:
        print(f"{params.source}: needs no pretrained weights")
        return 0
    print(table(weights).to_string(index=False))
    if args.list:
        return 0 if all(w.present for w in weights) else 1
    if offline() and not all(w.present for w in weights):
        print("offline (MLC_OFFLINE or HF_HUB_OFFLINE is set): nothing downloaded", file=sys.stderr)
    left = fetch_missing(weights)
    for w in left:
        print(f"missing: {w.what}: {w.source} -> {w.where}", file=sys.stderr)
    if not left:
        print("every weight is present")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
