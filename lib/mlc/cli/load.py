"""The params of a parsed command line (the commands' one step that reads a file)."""
from __future__ import annotations

import os
from pathlib import Path

from mlc.config.params import load_params


def load_from_args(args):
    """The params of parsed arguments; the process moves to the params' base folder, so that model-level
    paths (weight files, embedding tables) resolve as the params' own do.  ``--output-root`` is a path of the
    command line: a relative one is relative to the folder the command runs in, as every argument path is."""
    output_root = str(Path(args.output_root).expanduser().resolve()) if args.output_root else None
    params = load_params(args.params, set_args=args.set_args, output_root=output_root)
    os.chdir(params.base_dir)
    return params
