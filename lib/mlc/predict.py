"""``python -m mlc.predict``: the top labels of images with their scores (the same as ``mlc predict``).

The command lives in :mod:`mlc.cli.predict`."""
from mlc.cli.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
