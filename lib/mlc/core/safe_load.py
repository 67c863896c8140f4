"""Reading files that come from elsewhere without letting them run code.

A ``.pt``/``.pth`` checkpoint or a ``.pkl`` list is a pickle, and a pickle can name any Python
callable to be called while it loads: a crafted "checkpoint" runs arbitrary code with full
unpickling.  The kit therefore reads

* torch checkpoints with ``torch.load(weights_only=True)``, which rebuilds only tensors and plain
  containers, plus the few extra types official checkpoints hold (argparse ``Namespace`` of the
  training arguments, numpy scalars and dtypes of a stored best mAP): :data:`CHECKPOINT_GLOBALS`;
* plain pickles (the MKT / Open Images name lists) with :class:`RestrictedUnpickler`, which builds
  built-in containers, strings and numbers, and numpy arrays of them, and nothing else.

Full unpickling is an explicit opt-in that names the file: list it in the environment variable
``MLC_TRUSTED_FILES`` (paths separated by ``os.pathsep``), or pass ``trusted=True`` from code.  The
error for a file that needs it says so.
"""
from __future__ import annotations

import argparse
import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch

TRUST_ENV = "MLC_TRUSTED_FILES"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated or corrupt; the message names the file."""


class UnsafeFileError(CheckpointError):
    """A file needs full unpickling (it holds objects outside the safe list) and was not trusted."""


def _numpy_globals() -> list:
    core = getattr(np, "_core", None) or np.core
    out = [(core.multiarray.scalar, "numpy.core.multiarray.scalar"),
           (core.multiarray.scalar, "numpy._core.multiarray.scalar"),
           (np.dtype, "numpy.dtype")]
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        cls = getattr(getattr(np, "dtypes", None), name, None)
        if cls is not None:
            out.append((cls, f"numpy.dtypes.{name}"))
    return out


# What official checkpoints hold besides tensors: Q2L's and SGRE's argparse arguments, numpy scalars.
CHECKPOINT_GLOBALS: list = [argparse.Namespace, *_numpy_globals()]


def is_trusted(path: str | os.PathLike) -> bool:
    """Whether ``path`` is listed in ``$MLC_TRUSTED_FILES`` (compared as resolved paths)."""
    listed = [p for p in os.environ.get(TRUST_ENV, "").split(os.pathsep) if p]
    here = Path(path).resolve()
    return any(Path(p).expanduser().resolve() == here for p in listed)


def load_torch(path: str | os.PathLike, map_location="cpu", trusted: bool = False):
    """``torch.load`` that runs no code from the file (see the module docstring).

    Raises :class:`CheckpointError` naming the file when it is missing, empty, truncated or not a
    torch file, and :class:`UnsafeFileError` when it would need full unpickling.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes; an interrupted copy or write?)")
    if trusted or is_trusted(path):
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    try:
        with torch.serialization.safe_globals(CHECKPOINT_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "weights_only" in msg.lower() or "unsupported global" in msg.lower():
            first = next((l.strip() for l in msg.splitlines() if "GLOBAL" in l or "global" in l), msg.splitlines()[0])
            raise UnsafeFileError(
                f"{path}: the file holds Python objects outside the safe list, and loading them could run code "
                f"from it ({first}). If you trust this file, allow full unpickling for it alone: "
                f"{TRUST_ENV}={path.resolve()}") from None
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({msg.splitlines()[0]})") from None
    except Exception as e:  # truncated zip (RuntimeError), EOFError, ...
        raise CheckpointError(f"{path}: not a readable torch checkpoint; truncated or corrupt? "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles containers, strings, numbers and numpy arrays of those; any other class is refused."""

    _ALLOWED = {
        ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"), ("builtins", "set"),
        ("builtins", "frozenset"), ("builtins", "str"), ("builtins", "bytes"), ("builtins", "int"),
        ("builtins", "float"), ("builtins", "bool"), ("collections", "OrderedDict"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        """The class ``module.name`` if it is on the allow list, else an UnpicklingError."""
        if (module, name) in self._ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def load_pickle(path: str | os.PathLike, trusted: bool = False):
    """A plain pickle (lists / dicts of names) read with :class:`RestrictedUnpickler`."""
    path = Path(path)
    data = path.read_bytes()
    if trusted or is_trusted(path):
        return pickle.loads(data)
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as e:
        if "is not allowed" in str(e):
            raise UnsafeFileError(f"{path}: the pickle holds objects outside the safe list ({e}); loading them "
                                  f"could run code from the file. If you trust it: {TRUST_ENV}={path.resolve()}"
                                  ) from None
        raise
