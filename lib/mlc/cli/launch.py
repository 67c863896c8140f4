"""SLURM jobs through submitit (torchrun from a notebook: :mod:`mlc.runs.torchrun`).

``python -m mlc.launch slurm PARAMS --method M --nodes 2 --gpus-per-node 8 --partition P --time 1440``
submits the same training as a SLURM job with submitit; a preempted or timed-out job is requeued and
resumes from ``last.pt``.  ``--executor local`` runs it through submitit's local executor (no SLURM).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os

from mlc.cli.args import add_launch_arguments
from mlc.config.params import load_params
from mlc.runs.resolve import no_such_method
from mlc.runs.torchrun import LaunchError
from mlc.runs.train import run_training


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
    params = load_params(params_file, set_args=set_args, output_root=output_root)
    if method not in params.methods:
        raise KeyError(no_such_method(params, method))
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


def run_launch(args) -> int:
    """Submit the job the parsed arguments describe; with ``--wait`` print its test mAP."""
    job = submit(args.params, args.method, args.nodes, args.gpus_per_node, args.tasks_per_node, args.partition,
                 args.time, args.executor, args.folder, args.set_args, args.cpus_per_task, args.mem_gb)
    print(f"submitted job {job.job_id} ({args.nodes} node(s) x {args.tasks_per_node or args.gpus_per_node} "
          f"process(es)); logs in {job.paths.folder}")
    if args.wait:
        print(f"test mAP {100 * job.results()[0]['mAP']:.2f}")
    return 0


def main(argv=None) -> None:
    """``python -m mlc.launch slurm PARAMS --method M --nodes 2 --gpus-per-node 8 --partition P --time 1440``."""
    ap = argparse.ArgumentParser(prog="python -m mlc.launch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_launch_arguments(ap)
    run_launch(ap.parse_args(argv))


if __name__ == "__main__":
    main()
