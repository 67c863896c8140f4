"""``mlc evaluate`` / ``python -m mlc.evaluate PARAMS [--method M ...] [--checkpoint PATH]``: test metrics of
finished runs or released weights, written beside each run."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlc.cli.args import add_evaluate_arguments, add_params_arguments, parse
from mlc.cli.load import load_from_args
from mlc.config.params import ParamsError, RunParams
from mlc.core.io import metric_value
from mlc.engine import stage
from mlc.engine.rundir import RunConflictError
from mlc.evaluation.evaluate import EvaluationConflictError, evaluate, summary_table


def main(argv=None) -> int:
    """``python -m mlc.evaluate PARAMS_FILE [--method M] [--checkpoint PATH]`` (also ``mlc evaluate``)."""
    ap = argparse.ArgumentParser(prog="python -m mlc.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_arguments(ap)
    add_evaluate_arguments(ap)
    args = parse(ap, argv)
    # a checkpoint named on the command line is where the user stands, not in the checkout the params load from
    checkpoint = str(Path(args.checkpoint).expanduser().resolve()) if args.checkpoint else None
    try:
        return run_evaluation(load_from_args(args), args.method, checkpoint, args.device)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run_evaluation(params: RunParams, names, checkpoint, device: str = "auto") -> int:
    """Evaluate and print one table; clear errors are one line on stderr and exit code 1."""
    try:
        reports = evaluate(params, names, checkpoint, device)
    except (FileNotFoundError, ValueError, KeyError, EvaluationConflictError, RunConflictError,
            stage.StageNotFinishedError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 1
    for name in reports:
        out = params.run_dir / name
        weights = json.loads((out / "metrics_test.json").read_text())["weights"]
        print(f"{name}: {weights['kind']} weights ({weights['checkpoint']}); metrics in {out / 'metrics_test.json'}")
        zsl = out / "metrics_zsl.json"
        if params.methods[name].label_subset == "seen" and zsl.is_file():
            z = json.loads(zsl.read_text())["faithful"]
            print(f"{name}: ZSL mAP {100 * metric_value(z['ZSL']['mAP']):.2f}, "
                  f"GZSL mAP {100 * metric_value(z['GZSL']['mAP']):.2f}")
    print(summary_table(reports).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
