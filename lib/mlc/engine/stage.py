"""One training stage's folder (``outputs/<run>/<method>/``): its state, its lock, its checkpoints.

A stage is

* **new**      nothing trained yet (no checkpoint, no result);
* **started**  ``checkpoints/last.pt`` exists: rerunning resumes it;
* **failed**   ``failed.json`` says why (a diverged loss, non-finite scores); it is never reported;
* **finished** ``result.json`` exists (written last, only by a successful run) and no ``failed.json``.

Only one process trains a stage at a time: :func:`lock` takes an exclusive ``flock`` on
``<stage>/.lock`` and writes the holder's pid and host into it, so a second process is told who
holds it.  The kernel drops the lock when its holder dies, even by ``kill -9``.

Checkpoints are written atomically, and the previous ``last.pt`` is kept as ``last.prev.pt`` until
the new one is complete, so a truncated or corrupt ``last.pt`` falls back to the one before.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
import warnings
from pathlib import Path

import torch

from mlc.core.io import atomic_write_json, atomic_write_stream, open_locked, previous_path
from mlc.core.safe_load import CheckpointError, UnsafeFileError, load_torch

RESULT, FAILED, LOCK = "result.json", "failed.json", ".lock"


def status(stage_dir: str | os.PathLike) -> str:
    """'finished', 'failed', 'started' or 'new' (see the module docstring)."""
    d = Path(stage_dir)
    if (d / FAILED).is_file():
        return "failed"
    if (d / RESULT).is_file():
        return "finished"
    return "started" if has_checkpoint(d) else "new"


def has_checkpoint(stage_dir: str | os.PathLike) -> bool:
    """Whether the stage has a ``last.pt`` (or the ``last.prev.pt`` a kill may leave alone) to resume from."""
    ckpt = Path(stage_dir) / "checkpoints" / "last.pt"
    return ckpt.is_file() or previous_path(ckpt).is_file()


def is_finished(stage_dir: str | os.PathLike) -> bool:
    """Whether the stage finished successfully."""
    return status(stage_dir) == "finished"


def mark_failed(stage_dir: str | os.PathLike, info: dict) -> Path:
    """Write ``failed.json`` with ``info`` (why, where) and the time."""
    return atomic_write_json(Path(stage_dir) / FAILED, {"time": time.strftime("%Y-%m-%d %H:%M:%S"), **info})


def failure(stage_dir: str | os.PathLike) -> dict | None:
    """The contents of ``failed.json``, or None when the stage has not failed."""
    path = Path(stage_dir) / FAILED
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {"reason": f"{path} is unreadable"}


def clear_failed(stage_dir: str | os.PathLike) -> None:
    """Remove ``failed.json`` (a rerun starts from the last good checkpoint)."""
    (Path(stage_dir) / FAILED).unlink(missing_ok=True)


class StageLockedError(RuntimeError):
    """Another process is training the same stage."""


class StageNotFinishedError(RuntimeError):
    """A stage that failed or has not finished training was asked for its result."""


@contextlib.contextmanager
def lock(stage_dir: str | os.PathLike):
    """Hold ``<stage>/.lock`` exclusively while the block runs; :class:`StageLockedError` names the holder."""
    import fcntl
    d = Path(stage_dir)
    path = d / LOCK
    fd, got = open_locked(path)
    try:
        if not got:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "an unknown process"
            raise StageLockedError(f"{d} is being trained by {holder} (lock file {path}); wait for it to finish, "
                                   f"or stop that process, then run again")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


_ORPHAN = re.compile(r"^\..+\.tmp\d+$")


def remove_orphans(stage_dir: str | os.PathLike) -> list[Path]:
    """Delete temporary files that killed writers left behind (``.<name>.tmp<pid>``); call under the lock."""
    removed = []
    for folder in (Path(stage_dir), Path(stage_dir) / "checkpoints"):
        if folder.is_dir():
            for p in folder.iterdir():
                if _ORPHAN.match(p.name) and p.is_file():
                    p.unlink(missing_ok=True)
                    removed.append(p)
    return removed


def save_checkpoint(obj, path: str | os.PathLike, keep_previous: bool = False) -> Path:
    """``torch.save`` atomically; with ``keep_previous`` the file it replaces stays as ``<stem>.prev.pt``."""
    return atomic_write_stream(path, lambda f: torch.save(obj, f), keep_previous)


def load_checkpoint(path: str | os.PathLike, map_location="cpu", fallback: bool = False):
    """(checkpoint, the file it came from).  With ``fallback`` an unreadable file gives way to the
    ``<stem>.prev.pt`` beside it, with a warning naming both; otherwise the error names the file."""
    path = Path(path)
    try:
        return load_torch(path, map_location=map_location), path
    except UnsafeFileError:
        raise                                  # a crafted file is never silently skipped
    except CheckpointError as e:
        prev = previous_path(path)
        if not fallback or not prev.is_file():
            raise
        try:
            ck = load_torch(prev, map_location=map_location)
        except CheckpointError as e2:
            raise CheckpointError(f"{e}; the previous checkpoint is unreadable too: {e2}") from None
        warnings.warn(f"{e}; using the previous checkpoint {prev}", stacklevel=2)
        return ck, prev
