"""``python -m mlc.cli``: the ``mlc`` command."""
from mlc.cli.command import main

if __name__ == "__main__":
    main()
