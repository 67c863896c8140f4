"""The params of a parsed command line (the commands' one step that reads a file)."""
from __future__ import annotations

import os
from pathlib import Path

from mlc.config.params import Provenance, RunParams, load_params_with_provenance


def output_root_of(args) -> str | None:
    """``--output-root`` as an absolute path: a path of the command line, so a relative one is relative to the
    folder the command runs in, as every argument path is (never to the checkout, nor to notebooks/)."""
    return str(Path(args.output_root).expanduser().resolve()) if args.output_root else None


def load_from_args(args) -> RunParams:
    """The params of parsed arguments; the process moves to the params' base folder, so that model-level
    paths (weight files, embedding tables) resolve as the params' own do."""
    return load_with_provenance_from_args(args)[0]


def load_with_provenance_from_args(args) -> tuple[RunParams, Provenance]:
    """:func:`load_from_args`, and where each value came from (``mlc config``)."""
    params, provenance = load_params_with_provenance(args.params, set_args=args.set_args,
                                                     output_root=output_root_of(args))
    os.chdir(params.base_dir)
    return params, provenance
