"""``python -m mlc.pipeline``: every notebook of a run through papermill (``./run_all.sh``).

The command lives in :mod:`mlc.cli.run_all`."""
from mlc.cli.run_all import main

if __name__ == "__main__":
    raise SystemExit(main())
