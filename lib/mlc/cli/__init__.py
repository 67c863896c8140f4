"""Every command: ``mlc`` and its subcommands, ``python -m mlc.train | evaluate | predict | weights | launch``.
Nothing imports this package (the console scripts and ``python -m`` do)."""
from mlc.cli.command import main, train_main  # noqa: F401  (the console scripts' entry points)
