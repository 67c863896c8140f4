"""Atomic file writes: write beside the target, then rename, so a reader never sees half a file."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Callable


def _out_of_space(e: BaseException, folder: Path) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # torch's C++ writer reports a full disk as "basic_ios::clear: iostream error" or a bare write failure
    text = str(e).lower()
    if isinstance(e, RuntimeError) and ("iostream" in text or "no space" in text or "write" in text):
        try:
            return shutil.disk_usage(folder).free < 64 * 2**20
        except OSError:
            return False
    return False


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one rename.

    A full disk is reported as ``OSError(ENOSPC)`` naming ``path``; the target is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except Exception as e:
        if _out_of_space(e, path.parent):
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path} "
                                        f"({type(e).__name__}: {e}); {path} was left as it was", str(path)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically (fsync'd, then renamed)."""
    def write(tmp: Path):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return atomic_write(path, write)
