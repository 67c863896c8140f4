"""Multi-process training on the CPU: torchrun with gloo and 2 processes, as a user starts it."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, paper_methods

from mlc.config.params import load_params

pytestmark = pytest.mark.slow


def torchrun(params_file, method, nproc=2, wait=True, **env_extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLC_PROGRESS": "lines", **env_extra}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "mlc.train", str(params_file), "--method", method]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
                                start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """toy_ci in a fresh output root, with the toy CLIP and label embeddings that MKT and QKS need (built by
    notebooks 02 and 03 in a full run)."""
    from mlc.config.params import load_params
    root = tmp_path_factory.mktemp("ddp")
    pf = root / "params.yaml"
    # fp32: the test compares each test image's scores from two processes with one process's, and bf16 (the toy
    # recipes' precision on a CPU with bf16 hardware) rounds differently in batches of another composition
    fp32 = "".join(f"  {m}: {{train: {{amp: none}}}}\n" for m in load_params(ROOT / "params/toy_ci.yaml").methods)
    pf.write_text(f"extends: {ROOT / 'params/toy_ci.yaml'}\nname: ddp\noutput_root: {root / 'out'}\n"
                  f"data:\n  root: {root / 'world'}\nclip: {{amp: none}}\nmethods:\n{fp32}")
    params = load_params(pf)
    return pf, params, root


def _prepare_open_vocab(params):
    from mlc.runs.data import prepare_data
    from mlc.runs.embeddings import build_run_embeddings
    from mlc.runs.toy_clip import train_toy_clip
    manifest = prepare_data(params, progress=False)
    train_toy_clip(params, manifest, progress=False)
    build_run_embeddings(params, manifest=manifest, progress=False)


@pytest.mark.parametrize("method", paper_methods(load_params(ROOT / "params" / "toy_ci.yaml")))
def test_torchrun_two_processes_train_one_run_that_scores_every_test_image_once(ddp_run, method):
    from mlc.evaluation.evaluate import evaluate_method
    pf, params, root = ddp_run
    if params.methods[method].label_subset == "seen":             # open vocabulary: needs the run's CLIP
        _prepare_open_vocab(params)
    # the first run also generates the toy world: both ranks ask for it, one builds it
    done = torchrun(pf, method)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert sum(line.startswith("test mAP") for line in lines) == 1, done.stdout        # one process reports
    assert sum(line.startswith(f"[{method}] epoch 1/") for line in lines) == 1, done.stdout
    stage_dir = params.run_dir / method
    result = json.loads((stage_dir / "result.json").read_text())
    # one set of files, no temporary leftovers of a second writer
    assert set(p.name for p in (stage_dir / "checkpoints").iterdir()) <= {"best.pt", "last.pt", "last.prev.pt"}
    assert "global batch 16 = 2 process(es) x 8 images" in (stage_dir / "train.log").read_text()
    saved = np.load(stage_dir / "test_scores.npz")
    # every test image exactly once, in the dataset's order: a single-process evaluation of the same
    # checkpoint gives the same scores and the same metrics
    single = evaluate_method(params, method, device="cpu", progress=False)
    assert saved["scores"].shape == single["scores"].shape
    np.testing.assert_array_equal(saved["targets"], single["targets"])
    np.testing.assert_allclose(saved["scores"], single["scores"], rtol=1e-5, atol=1e-6)
    assert result["test"]["mAP"] == pytest.approx(single["report"]["mAP"], abs=1e-9)
    if method == "salgl":
        # the co-occurrence memory counted the global batch in both processes: after 2 epochs over all 96
        # training images (6 batches of 8 per process), its diagonal holds every positive label twice
        from mlc.engine import stage as st
        last, _ = st.load_checkpoint(stage_dir / "checkpoints" / "last.pt")
        comatrix = last["model"]["comatrix"]
        train_positives = int((params_targets(params, method) == 1).sum())
        assert float(comatrix.diagonal(dim1=1, dim2=2).sum()) == 2 * train_positives


def params_targets(params, method):
    from mlc.runs.data import method_data
    return method_data(params, method).datasets["train"].targets()


def test_resume_after_the_launcher_and_its_workers_are_killed(tmp_path):
    """kill -9 of torchrun and its workers (a node lost) after the first epoch; the rerun resumes from last.pt
    and ends with the numbers of an uninterrupted run."""
    from conftest import toy_params_file
    ref = toy_params_file(tmp_path, "ref", "epochs: 3, batch_size: 16")
    killed = toy_params_file(tmp_path, "killed", "epochs: 3, batch_size: 16")
    full = torchrun(ref, "q2l")
    assert full.returncode == 0, full.stdout[-2000:] + full.stderr[-2000:]
    last = tmp_path / "killed" / "rel" / "q2l" / "checkpoints" / "last.pt"
    proc = torchrun(killed, "q2l", wait=False, MLC_KILL_AT_STEP="9999")
    deadline = time.time() + 300
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    # torchrun starts its workers in sessions of their own: kill -9 the launcher and every worker (the job's
    # processes all name this params file), as a scheduler ending the job does
    subprocess.run(["pkill", "-9", "-f", str(killed)], check=False)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last.is_file() and not (last.parent.parent / "result.json").is_file()
    again = torchrun(killed, "q2l")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "resuming" in again.stdout
    a = json.loads((tmp_path / "ref" / "rel" / "q2l" / "result.json").read_text())
    b = json.loads((tmp_path / "killed" / "rel" / "q2l" / "result.json").read_text())
    assert b["test"]["mAP"] == pytest.approx(a["test"]["mAP"], abs=1e-6)
    assert [r["train_loss"] for r in b["history"]] == pytest.approx([r["train_loss"] for r in a["history"]], rel=1e-5)


def test_notebook_path_launches_torchrun_and_streams_its_progress(tmp_path, capfd):
    """``train.devices: 2`` in the params: train_method (what the notebooks call) starts torchrun, prints its
    lines as they come, and returns the result; a failing rank fails the call with its output."""
    from conftest import toy_params_file

    from mlc.config.params import load_params
    from mlc.runs.torchrun import LaunchError
    from mlc.runs.train import train_method
    params = load_params(toy_params_file(tmp_path, "nb", "epochs: 1, batch_size: 16, devices: 2"))
    result = train_method(params, "q2l")
    out = capfd.readouterr().out
    assert "global batch 16 = 2 process(es)" in out and "test mAP" in out
    assert result.test["mAP"] == json.loads((params.run_dir / "q2l" / "result.json").read_text())["test"]["mAP"]
    bad = load_params(toy_params_file(tmp_path, "bad", "epochs: 1, batch_size: 16, devices: 2, lr: 1.0e+30"))
    with pytest.raises(LaunchError, match="diverged"):
        train_method(bad, "q2l", progress=False)


def test_global_batch_must_divide_over_processes_and_accumulation(tmp_path):
    from conftest import toy_params_file

    from mlc.config.params import load_params
    from mlc.runs.train import per_process_batch
    params = load_params(toy_params_file(tmp_path, "b", "batch_size: 12, accumulate_steps: 2"))
    assert per_process_batch(params, "q2l", 1) == 6
    assert per_process_batch(params, "q2l", 2) == 3
    with pytest.raises(ValueError, match=r"batch_size 12 \(the global batch\) does not divide into 5"):
        per_process_batch(params, "q2l", 5)


def test_accumulation_gives_the_gradient_of_the_whole_batch():
    """Two forwards of 8 images with accumulate_steps 2 update the weights as one forward of 16 does."""
    from mlc.config.params import TrainParams
    from mlc.engine.loop import _Run, train_one_epoch
    from mlc.engine.optim import build_scheduler, make_adamw  # noqa: F401
    from mlc.engine.precision import Autocast
    from mlc.modeling.method import Method
    torch.manual_seed(0)
    x, y = torch.randn(32, 5), (torch.rand(32, 3) > 0.5).float()

    def run_with(accumulate):
        torch.manual_seed(1)
        model = torch.nn.Linear(5, 3)
        batch = 16 // accumulate
        loader = [{"image": x[i:i + batch], "target": y[i:i + batch], "index": torch.arange(i, i + batch)}
                  for i in range(0, 32, batch)]
        tp = TrainParams(lr=0.1, weight_decay=0.0, fused_adamw=False, epochs=1, scheduler="constant",
                         accumulate_steps=accumulate, channels_last=False, log_every=1, grad_clip_norm=None)
        method = Method(model=model, loss_fn=lambda out, t: {
            "loss": torch.nn.functional.binary_cross_entropy_with_logits(out["logits"], t)},
            forward_fn=lambda m, images, t: {"logits": m(images)})
        opt = make_adamw([{"params": list(model.parameters())}], tp, torch.device("cpu"))
        sched, per_it = build_scheduler(opt, tp, 2)
        from mlc.engine.logs import RunLogger
        run = _Run(method, model, model, None, opt, sched, per_it, None, torch.amp.GradScaler("cpu", enabled=False),
                   Autocast(torch.device("cpu"), "none"), torch.device("cpu"), tp, {}, lambda e: loader, 2,
                   None, "t", 0, False, RunLogger("/nonexistent", "t", tensorboard=False, enabled=False))
        record = train_one_epoch(run, 0)
        return model.weight.detach().clone(), record["train_loss"]

    w1, l1 = run_with(1)
    w2, l2 = run_with(2)
    torch.testing.assert_close(w1, w2, rtol=1e-5, atol=1e-6)
    assert l1 == pytest.approx(l2, rel=1e-6)


def test_two_processes_preparing_the_same_toy_world_build_it_once(tmp_path):
    """Two jobs sharing one data folder: the first builds the world under a lock, the second waits and reuses it."""
    code = ("import sys; from mlc.config.params import load_params; from mlc.runs.data import prepare_data;"
            "m = prepare_data(load_params(sys.argv[1]), progress=False); print(len(m.split('train')))")
    from conftest import toy_params_file
    pf = toy_params_file(tmp_path, "w")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(pf)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-1500:] for o in outs]
    assert [o[0].strip().splitlines()[-1] for o in outs] == ["64"] * 3
    assert not list((tmp_path / "world").parent.glob(".*.partial"))


def test_training_notebook_with_devices_2_under_papermill(tmp_path):
    """notebooks/10 with the parameter devices=2, executed headless: the cell launches torchrun, its progress
    lines land in the notebook, and the notebook goes on with the result."""
    import nbformat
    import papermill
    p = tmp_path / "nb.yaml"
    p.write_text(f"extends: {ROOT / 'params/toy_ci.yaml'}\noutput_root: {tmp_path / 'outputs'}\n"
                 f"data:\n  root: {tmp_path / 'world'}\n")
    out = tmp_path / "10.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "10_train_q2l.ipynb"), str(out), cwd=str(ROOT),
                               parameters={"params_file": str(p), "devices": 2}, kernel_name="python3",
                               progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "global batch 16 = 2 process(es) x 8 images" in text
    assert (tmp_path / "outputs" / "toy_ci" / "q2l" / "result.json").is_file()


def test_a_run_conflict_under_torchrun_is_one_line_from_rank_0(tmp_path):
    from conftest import toy_params_file
    pf = toy_params_file(tmp_path, "c", "epochs: 1, batch_size: 16")
    assert torchrun(pf, "q2l").returncode == 0
    other = toy_params_file(tmp_path, "c", "epochs: 1, batch_size: 16, lr: 3.0e-4")
    done = torchrun(other, "q2l")
    assert done.returncode != 0
    assert done.stderr.count("error (RunConflictError)") == 1, done.stderr[-3000:]
    # no rank prints a traceback (torchrun's own failure summary aside)
    assert "[rank1]: Traceback" not in done.stderr and "[rank0]: Traceback" not in done.stderr


def test_devices_flag_is_the_params_key():
    import argparse

    from mlc.cli.args import add_params_arguments, add_train_arguments, train_set_args
    ap = argparse.ArgumentParser()
    add_params_arguments(ap)
    add_train_arguments(ap)
    args = ap.parse_args(["p.yaml", "--method", "salgl", "--devices", "4", "--set", "seed=1"])
    assert train_set_args(args) == ["seed=1", "methods.salgl.train.devices=4"]
    assert train_set_args(ap.parse_args(["p.yaml", "--method", "q2l"])) == []
