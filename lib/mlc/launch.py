"""Launching training in other processes: torchrun from a notebook, SLURM through submitit.

``train.devices: N`` (or ``mlc train ... --devices N``) makes :func:`mlc.train.train_method` start
``torchrun --nproc_per_node N -m mlc.train PARAMS --method M`` as a subprocess and stream its output
into the caller (a notebook cell, a terminal).  The kernel never joins the process group, so a rank
that dies cannot hang it: torchrun stops the others and the cell fails with the rank's traceback.

``python -m mlc.launch slurm PARAMS --method M --nodes 2 --gpus-per-node 8 --partition P --time 1440``
submits the same training as a SLURM job with submitit; a preempted or timed-out job is requeued and
resumes from ``last.pt``.  ``--executor local`` runs it through submitit's local executor (no SLURM).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from .params import LAUNCH_BASE_DIR_ENV, RunParams, params_to_dict


class LaunchError(RuntimeError):
    """A launched training process failed; the message holds the end of its output."""


def _params_file(params: RunParams, overrides: dict) -> Path:
    """The params as a file a subprocess can read (the resolved params, with ``overrides`` applied)."""
    d = params_to_dict(params)
    for key, value in overrides.items():
        node = d
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    fd, path = tempfile.mkstemp(prefix=f"mlc-{params.name}-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(d, f, sort_keys=False)
    return Path(path)


def torchrun_command(params_file: str | os.PathLike, method: str, nproc: int, extra: list[str] = ()) -> list[str]:
    """The torchrun command line of one method's training on this node."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "mlc.train", str(params_file), "--method", method, *extra]


def train_with_torchrun(params: RunParams, name: str, devices: int, progress: bool = True):
    """Train ``name`` in ``devices`` processes under torchrun, streaming their output; the stage's result, or
    :class:`LaunchError` with the failing rank's output."""
    from .engine import _load_result
    from .stage import is_finished
    pf = _params_file(params, {f"methods.{name}.train.devices": 1})
    env = dict(os.environ, MLC_PROGRESS="lines", PYTHONUNBUFFERED="1", **{LAUNCH_BASE_DIR_ENV: params.base_dir},
               OMP_NUM_THREADS=os.environ.get(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices))))
    lib = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = lib + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else lib
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


class TrainTask:
    """What a SLURM (or local) submitit job runs in each of its processes: the process group from submitit's
    job environment (one process per GPU; rank 0 writes), then ``mlc.train`` on the params.  Preempted or
    timed out, the job is requeued (:meth:`checkpoint`) and the training resumes from ``last.pt``."""

    def __init__(self, params_file: str, method: str, set_args: list[str] | None = None,
                 output_root: str | None = None):
        self.params_file, self.method = str(params_file), method
        self.set_args, self.output_root = list(set_args or []), output_root

    def __call__(self) -> dict:
        """Train (this process's part); returns the test metrics."""
        import submitit

        from .params import load_params
        from .train import run_training
        env = submitit.JobEnvironment()
        os.environ.update(RANK=str(env.global_rank), LOCAL_RANK=str(env.local_rank), WORLD_SIZE=str(env.num_tasks),
                          MASTER_ADDR=env.hostnames[0], MASTER_PORT=str(_port(env.job_id)))
        params = load_params(self.params_file, set_args=self.set_args, output_root=self.output_root)
        code = run_training(params, self.method)
        if code != 0:
            raise LaunchError(f"training {self.method!r} from {self.params_file} ended with exit code {code} "
                              f"(job {env.job_id}, rank {env.global_rank}); see its log")
        return json.loads((params.run_dir / self.method / "result.json").read_text())["test"]

    def checkpoint(self, *args, **kwargs):
        """Requeue the same task: the engine resumes the stage from its last checkpoint."""
        import submitit
        return submitit.helpers.DelayedSubmission(TrainTask(self.params_file, self.method, self.set_args,
                                                            self.output_root))


def _port(job_id: str) -> int:
    # one rendezvous port per job, the same on every node of it
    return 20000 + int(hashlib.sha256(str(job_id).encode()).hexdigest(), 16) % 20000


def submit(params_file: str, method: str, nodes: int = 1, gpus_per_node: int = 1, tasks_per_node: int | None = None,
           partition: str | None = None, time_minutes: int = 1440, executor: str = "slurm", folder: str | None = None,
           set_args: list[str] | None = None, cpus_per_task: int | None = None, mem_gb: int | None = None,
           output_root: str | None = None):
    """Submit ``mlc.train PARAMS --method M`` as a job of ``nodes`` x ``tasks_per_node`` processes (one per GPU
    by default); ``executor="local"`` runs it through submitit's local executor.  Returns the submitit job."""
    import submitit

    from .params import load_params
    params = load_params(params_file, set_args=set_args, output_root=output_root)
    if method not in params.methods:
        raise KeyError(f"{params_file}: no method {method!r} under 'methods' (has {', '.join(params.methods)})")
    tasks = tasks_per_node or max(1, gpus_per_node)
    folder = folder or str(params.run_dir / method / "submitit" / "%j")
    ex = submitit.AutoExecutor(folder=folder, cluster=None if executor == "slurm" else executor)
    options = dict(nodes=nodes, tasks_per_node=tasks, timeout_min=time_minutes, name=f"mlc-{params.name}-{method}")
    if executor == "slurm" or gpus_per_node:
        options["gpus_per_node"] = gpus_per_node
    if cpus_per_task:
        options["cpus_per_task"] = cpus_per_task
    if mem_gb:
        options["mem_gb"] = mem_gb
    if partition:
        options["slurm_partition"] = partition
    if executor == "slurm":
        options["slurm_signal_delay_s"] = 120          # time to leave before the limit: the epoch in hand is redone
    ex.update_parameters(**options)
    return ex.submit(TrainTask(params_file, method, set_args, output_root))


def main(argv=None) -> None:
    """``python -m mlc.launch slurm PARAMS --method M --nodes 2 --gpus-per-node 8 --partition P --time 1440``."""
    ap = argparse.ArgumentParser(prog="python -m mlc.launch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sl = sub.add_parser("slurm", help="submit a training job to SLURM with submitit (requeued on preemption)")
    sl.add_argument("params", help="the params file")
    sl.add_argument("--method", required=True)
    sl.add_argument("--nodes", type=int, default=1)
    sl.add_argument("--gpus-per-node", type=int, default=1)
    sl.add_argument("--tasks-per-node", type=int, default=None, help="processes per node (default: one per GPU)")
    sl.add_argument("--partition", default=None)
    sl.add_argument("--time", type=int, default=1440, help="the job's time limit in minutes")
    sl.add_argument("--cpus-per-task", type=int, default=None)
    sl.add_argument("--mem-gb", type=int, default=None)
    sl.add_argument("--folder", default=None, help="submitit's log folder (default <run>/<method>/submitit/%%j)")
    sl.add_argument("--executor", default="slurm", choices=["slurm", "local"],
                    help="local: run through submitit's local executor (no SLURM), e.g. to try a job")
    sl.add_argument("--set", dest="set_args", action="append", default=[], metavar="KEY=VALUE")
    sl.add_argument("--wait", action="store_true", help="wait for the job and print its test metrics")
    args = ap.parse_args(argv)
    job = submit(args.params, args.method, args.nodes, args.gpus_per_node, args.tasks_per_node, args.partition,
                 args.time, args.executor, args.folder, args.set_args, args.cpus_per_task, args.mem_gb)
    print(f"submitted job {job.job_id} ({args.nodes} node(s) x {args.tasks_per_node or args.gpus_per_node} "
          f"process(es)); logs in {job.paths.folder}")
    if args.wait:
        print(f"test mAP {100 * job.results()[0]['mAP']:.2f}")


if __name__ == "__main__":
    main()
