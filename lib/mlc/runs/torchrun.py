"""Training in other processes on this node: ``train.devices: N`` starts torchrun from a notebook or a script.

``train.devices: N`` (or the training notebooks' ``devices`` parameter) makes :func:`mlc.runs.train.train_method`
start ``torchrun --nproc_per_node N -m mlc.train PARAMS --method M`` as a subprocess and stream its output
into the caller (a notebook cell, a terminal).  The kernel never joins the process group, so a rank that
dies cannot hang it: torchrun stops the others and the call fails with the rank's output.  SLURM jobs:
:mod:`mlc.launch`.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from mlc.config.params import LAUNCH_BASE_DIR_ENV, RunParams, params_to_dict
from mlc.engine.loop import _load_result
from mlc.engine.stage import is_finished


class LaunchError(RuntimeError):
    """A launched training process failed; the message holds the end of its output."""


def _params_file(params: RunParams, name: str) -> Path:
    """The resolved params as a file the torchrun processes read, with ``name`` set to train in one process
    each (so that they do not launch torchrun again)."""
    d = params_to_dict(params)
    d["methods"][name]["train"]["devices"] = 1
    fd, path = tempfile.mkstemp(prefix=f"mlc-{params.name}-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(d, f, sort_keys=False)
    return Path(path)


def torchrun_command(params_file: str | os.PathLike, method: str, nproc: int) -> list[str]:
    """The torchrun command line of one method's training on this node."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "mlc.train", str(params_file), "--method", method]


def train_with_torchrun(params: RunParams, name: str, devices: int, progress: bool = True):
    """Train ``name`` in ``devices`` processes under torchrun, streaming their output; the stage's result, or
    :class:`LaunchError` with the failing rank's output."""
    pf = _params_file(params, name)
    env = dict(os.environ, MLC_PROGRESS="lines", PYTHONUNBUFFERED="1", **{LAUNCH_BASE_DIR_ENV: params.base_dir},
               OMP_NUM_THREADS=os.environ.get(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices))))
    lib = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [lib, env.get("PYTHONPATH")]))
    tail: list[str] = []
    try:
        with subprocess.Popen(torchrun_command(pf, name, devices), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, bufsize=1, env=env) as proc:
            for line in proc.stdout:
                tail = (tail + [line])[-60:]
                if progress:
                    print(line, end="", flush=True)
            code = proc.wait()
    finally:
        pf.unlink(missing_ok=True)
    stage_dir = params.run_dir / name
    if code != 0 or not is_finished(stage_dir):
        raise LaunchError(f"torchrun ({devices} processes) training {name!r} into {stage_dir} exited with code "
                          f"{code}; its last lines:\n" + "".join(tail))
    return _load_result(stage_dir)
