"""SLURM through submitit, tried with submitit's local executor (no SLURM needed)."""
import json
import time

import pytest
from conftest import toy_params_file

pytestmark = pytest.mark.slow


def test_local_executor_job_with_two_processes_trains_one_run(tmp_path):
    from mlc.cli.launch import submit
    pf = toy_params_file(tmp_path, "two", "epochs: 1, batch_size: 16")
    job = submit(pf, "q2l", nodes=1, gpus_per_node=0, tasks_per_node=2, executor="local",
                 folder=str(tmp_path / "jobs" / "%j"), time_minutes=10)
    results = job.results()                       # one per process; every rank returns the run's test metrics
    assert len(results) == 2 and results[0]["mAP"] == results[1]["mAP"]
    test = results[0]
    stage = tmp_path / "two" / "rel" / "q2l"
    assert test["mAP"] == json.loads((stage / "result.json").read_text())["test"]["mAP"]
    assert "global batch 16 = 2 process(es) x 8 images" in (stage / "train.log").read_text()


def test_a_preempted_job_is_requeued_and_resumes_from_last_pt(tmp_path):
    from mlc.cli.launch import submit
    ref = toy_params_file(tmp_path, "ref", "epochs: 12, batch_size: 16")
    pf = toy_params_file(tmp_path, "pre", "epochs: 12, batch_size: 16")
    reference = submit(ref, "q2l", gpus_per_node=0, tasks_per_node=1, executor="local",
                       folder=str(tmp_path / "jobs" / "%j"), time_minutes=10).result()
    job = submit(pf, "q2l", gpus_per_node=0, tasks_per_node=1, executor="local", folder=str(tmp_path / "jobs" / "%j"),
                 time_minutes=10)
    last = tmp_path / "pre" / "rel" / "q2l" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not last.is_file() and time.time() < deadline:
        time.sleep(0.05)
    # the signal SLURM sends each task before preempting the job (--signal), here to the one task process
    import os
    import subprocess

    from submitit.local.local import LocalJobEnvironment
    tasks = subprocess.run(["pgrep", "-P", str(job._process.pid)], capture_output=True, text=True).stdout.split()
    assert len(tasks) == 1, tasks
    os.kill(int(tasks[0]), LocalJobEnvironment._usr_sig())
    test = job.result()
    log = (tmp_path / "pre" / "rel" / "q2l" / "train.log").read_text()
    assert "resuming" in log
    assert test["mAP"] == pytest.approx(reference["mAP"], abs=1e-9)
