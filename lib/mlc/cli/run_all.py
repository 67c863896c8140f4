"""``mlc run-all`` / ``./run_all.sh PARAMS``: every notebook of a run through papermill, in dependency order."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mlc.cli.args import add_run_all_arguments, parse
from mlc.cli.load import output_root_of
from mlc.config.params import find_checkout
from mlc.notebook.execute import execute_one
from mlc.notebook.pipeline import run_all


def run_all_from_args(args) -> int:
    """Run the notebooks the parsed arguments name.  Paths of the command line (the params file, a relative
    ``--output-root``) are resolved here, once, against the folder the command runs in, so the pipeline and its
    notebook kernels (which run in notebooks/) get the same absolute paths.  Run outside a kit checkout, the
    command moves to the checkout that holds the params file (whose notebooks it runs), as the other commands
    move to the params' base folder."""
    params_file = Path(args.params).expanduser().resolve()
    output_root = output_root_of(args)
    checkout = find_checkout(params_file.parent)
    if find_checkout(Path.cwd()) is None and checkout is not None:
        os.chdir(checkout)
    return run_all(params_file, args.only, set_args=args.set_args, output_root=output_root, jobs=args.jobs)


def main(argv=None) -> None:
    """``python -m mlc.pipeline PARAMS [--only ...] [--set ...]`` (what run_all.sh calls)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--execute"]:                      # one notebook, in a process of run_all
        sys.exit(execute_one(*map(Path, argv[1:4])))
    ap = argparse.ArgumentParser(prog="python -m mlc.pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_all_arguments(ap)
    sys.exit(run_all_from_args(parse(ap, argv)))


if __name__ == "__main__":
    main()
