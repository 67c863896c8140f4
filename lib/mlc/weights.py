"""``python -m mlc.weights``: the pretrained weights a run needs.

The command lives in :mod:`mlc.cli.weights`."""
from mlc.cli.weights import main

if __name__ == "__main__":
    raise SystemExit(main())
