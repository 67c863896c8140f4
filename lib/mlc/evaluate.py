"""``python -m mlc.evaluate``: test metrics of finished runs or released weights (``mlc evaluate``).

The command lives in :mod:`mlc.cli.evaluate`."""
from mlc.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
