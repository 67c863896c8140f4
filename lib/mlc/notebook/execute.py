"""One notebook executed through papermill: what each process of ``run_all`` (:mod:`mlc.notebook.pipeline`)
runs, in the repository's root.

    python -m mlc.notebook.execute NOTEBOOK EXECUTED_COPY PARAMS_FILE

Kept apart from the pipeline so that its process imports papermill and the standard library only: a notebook's
own kernel imports torch and the kit, and this process, which only waits for it, had paid the same imports again
(``python -c "import mlc.pipeline, papermill"``: about 6.5 s of CPU on 2 cores, against 2.5 s for this module and
papermill) for each of the 13 notebooks of a run.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import sys
from pathlib import Path


def _as_shown(params_path: Path) -> str:
    """The params file as the executed notebook shows it: relative to the checkout (this process's folder, where
    ``session.setup`` resolves it too) when inside it, so that exported pages show no machine paths."""
    try:
        return params_path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(params_path)


def execute_one(nb: Path, target: Path, params_path: Path) -> int:
    """Execute one notebook in the working directory (what each process of :func:`run_all` runs, started in
    the repository's root): its progress lines go to stdout, a failure's error to stderr and the exit code."""
    import shutil
    import tempfile

    import papermill as pm
    # stopped by run_all (another notebook failed): leave through papermill, which shuts the kernel down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    _stream_notebook_output()
    sockets = Path(tempfile.mkdtemp(prefix="mlc-kernel-"))
    extra = {} if os.name == "nt" else {"kernel_manager_class": _ipc_kernel_manager(sockets)}
    try:
        # a kernel starting beside a busy training may take long: wait up to 5 minutes, not papermill's 60 s
        pm.execute_notebook(str(nb), str(target), parameters={"params_file": _as_shown(params_path)},
                            cwd=os.getcwd(), kernel_name="python3", progress_bar=False, log_output=True,
                            start_timeout=300, **extra)
    except Exception as e:  # papermill raises PapermillExecutionError, nbclient errors, ...
        print(_error_text(e), file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    return 0


def _ipc_kernel_manager(socket_dir: Path):
    """A kernel manager whose kernel talks over Unix sockets in ``socket_dir``: kernels started at the same
    moment by notebooks side by side cannot pick the same TCP port (jupyter_client picks free ports, closes
    them and lets the kernel bind them later), and nothing is exposed on the network."""
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", str(socket_dir / "kernel"))
            super().__init__(**kwargs)

    return IPCKernelManager


# the progress lines worth a terminal: "[q2l] epoch 3/12 ... ETA 1m40s", "[toy CLIP] epoch ...", resume notes
_PROGRESS_LINE = re.compile(r"^\[[^\]]+\] |^resuming |^early stop")


class _ProgressLines(logging.Handler):
    """Prints the progress lines among what papermill logs of the notebooks' outputs."""

    def emit(self, record):
        for line in record.getMessage().splitlines():
            if _PROGRESS_LINE.match(line.strip()):
                print("   " + line.strip(), flush=True)


def _stream_notebook_output() -> None:
    """Show the notebooks' progress lines (from papermill's ``log_output``) on the terminal as they come."""
    log = logging.getLogger("papermill")
    if not any(isinstance(h, _ProgressLines) for h in log.handlers):
        log.addHandler(_ProgressLines())
        log.setLevel(logging.INFO)
        log.propagate = False


def _error_text(e: Exception) -> str:
    """The whole error of a failed cell (a run conflict lists its differences on several lines)."""
    ename, evalue = getattr(e, "ename", None), getattr(e, "evalue", None)
    if ename is not None and evalue is not None:
        return f"{ename}: {evalue}".replace("\n", "\n  ")
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[-1] if text else ''}"


if __name__ == "__main__":
    sys.exit(execute_one(*map(Path, sys.argv[1:4])))
