"""``mlc run-all`` / ``./run_all.sh PARAMS``: every notebook of a run through papermill, in dependency order."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlc.cli.args import add_run_all_arguments, parse
from mlc.notebook.pipeline import execute_one, run_all


def main(argv=None) -> None:
    """``python -m mlc.pipeline PARAMS [--only ...] [--set ...]`` (what run_all.sh calls)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--execute"]:                      # one notebook, in a process of run_all
        sys.exit(execute_one(*map(Path, argv[1:4])))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_all_arguments(ap)
    args = parse(ap, argv)
    sys.exit(run_all(args.params, args.only, args.set_args, args.output_root, args.jobs))


if __name__ == "__main__":
    main()
