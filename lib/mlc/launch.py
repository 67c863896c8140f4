"""``python -m mlc.launch``: submit a training to SLURM through submitit.

The command lives in :mod:`mlc.cli.launch`."""
from mlc.cli.launch import main

if __name__ == "__main__":
    raise SystemExit(main())
