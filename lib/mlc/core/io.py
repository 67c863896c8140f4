"""Atomic file writes: write beside the target, then rename, so a reader never sees half a file.

JSON is written strictly (RFC 8259): a NaN or infinite number, which Python's ``json`` would write as the bare
word ``NaN`` that other parsers reject, is written as ``null`` (:func:`to_json`); readers turn a metric's
``null`` back into NaN (:func:`metric_value`, :func:`nulls_to_nan`).
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
from pathlib import Path
from typing import BinaryIO, Callable


def _out_of_space(e: BaseException, folder: Path) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # torch's C++ writer reports a full disk as "basic_ios::clear: iostream error", "unexpected pos N vs M" (its
    # zip writer) or a bare write failure
    text = str(e).lower()
    if isinstance(e, RuntimeError) and any(s in text for s in ("iostream", "no space", "write", "unexpected pos")):
        try:
            return shutil.disk_usage(folder).free < 64 * 2**20
        except OSError:
            return False
    return False


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object], keep_previous: bool = False) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one rename.  With ``keep_previous`` the file
    it replaces stays as ``<stem>.prev<suffix>`` (moved only once the new one is complete).

    A full disk is reported as ``OSError(ENOSPC)`` naming ``path``; the target is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        if keep_previous and path.is_file():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except Exception as e:
        if _out_of_space(e, path.parent):
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path} "
                                        f"({type(e).__name__}: {e}); {path} was left as it was", str(path)) from None
        if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and \
                e.filename in (str(tmp), tmp):
            # the temporary file is the kit's own detail: name the file the user asked for and its folder
            raise OSError(e.errno, f"cannot write {path}: {e.strerror} (the folder {path.parent} is not writable); "
                                   f"{path} was left as it was", str(path)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def previous_path(path: str | os.PathLike) -> Path:
    """Where :func:`atomic_write` keeps the file a write replaced: ``last.pt`` -> ``last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def atomic_write_stream(path: str | os.PathLike, write: Callable[[BinaryIO], object],
                        keep_previous: bool = False) -> Path:
    """``write(file)`` into a binary file opened for it, fsync'd, then renamed onto ``path`` atomically."""
    def to_file(tmp: Path):
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    return atomic_write(path, to_file, keep_previous)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically (fsync'd, then renamed)."""
    return atomic_write_stream(path, lambda f: f.write(text.encode()))


def json_safe(obj):
    """``obj`` with every NaN or infinite float replaced by None (JSON ``null``), numpy scalars and arrays made
    Python numbers and lists, tuples made lists: what strict JSON can hold."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "tolist") and not isinstance(obj, (int, float)):   # numpy scalar or array
        return json_safe(obj.tolist())
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    return obj


def to_json(obj, indent: int | None = None) -> str:
    """Strict JSON text of ``obj``: NaN and infinities become ``null`` (see :func:`json_safe`), never the ``NaN``
    literal that JSON parsers other than Python's reject."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 1) -> Path:
    """Write ``obj`` as strict JSON (:func:`to_json`), atomically."""
    return atomic_write_text(path, to_json(obj, indent=indent))


def metric_value(value) -> float:
    """A number read back from a metrics file: ``null`` (what :func:`to_json` writes for NaN) is NaN."""
    return math.nan if value is None else float(value)


def nulls_to_nan(obj):
    """``obj`` (metrics read back from JSON: dicts and lists of numbers) with every ``null`` made NaN again, as it
    was before it was written.  Only for structures where nothing but a number can be ``null``."""
    if isinstance(obj, dict):
        return {k: nulls_to_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [nulls_to_nan(v) for v in obj]
    return math.nan if obj is None else obj


def open_locked(path: str | os.PathLike) -> tuple[int, bool]:
    """Open (creating it and its folder) the lock file ``path`` and try an exclusive ``flock`` without waiting:
    (file descriptor, whether this process got the lock).  Closing the descriptor releases it; so does the
    kernel when the process dies."""
    import fcntl
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise OSError(e.errno, f"cannot create the lock file {path} ({e.strerror}): the kit writes there (a dataset, "
                               f"cache or run being built); make {path.parent} writable, or point the params at a "
                               f"writable folder (output_root, data.root, data.manifest)", str(path)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd, True
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise
        return fd, False


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str = ""):
    """Hold an exclusive lock on ``path`` while the block runs, waiting for another process that holds it.
    Guards shared caches (the toy world, a converted dataset, the image cache) that several processes or
    jobs may want to build at once: the first builds, the others wait and then find the work done."""
    import fcntl
    fd, got = open_locked(path)
    try:
        if not got:
            print(f"waiting for another process to finish {what or Path(path).name} (lock {path}) ...", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield Path(path)
    finally:
        os.close(fd)              # closing releases the lock
