"""``python -m mlc.train``: train one method of a run (the same as ``mlc train``).

The command lives in :mod:`mlc.cli.train`."""
from mlc.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
