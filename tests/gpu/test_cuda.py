"""What only a GPU can show: CUDA device choice, AMP (bf16 and fp16 + GradScaler), the speed switches and
the kit's training path on CUDA.  Collected only with ``MLC_GPU_TESTS=1`` (benchmarks/gpu_check.sh sets it);
without a usable GPU every test here fails, none skips."""
import json
import os
import subprocess
import sys

import numpy as np
import torch
from conftest import ROOT, toy_params_file


def test_cuda_is_usable_and_auto_picks_it():
    from mlc.engine.loop import describe_cuda, pick_device
    from mlc.engine.precision import resolve_amp
    assert torch.cuda.is_available(), describe_cuda()
    assert pick_device("auto").type == "cuda"
    assert torch.cuda.get_device_name(0) in describe_cuda()
    major, _ = torch.cuda.get_device_capability(0)
    assert resolve_amp("auto", torch.device("cuda")) == (torch.bfloat16 if major >= 8 else torch.float16)
    assert resolve_amp("auto", torch.device("cpu")) is None


def _train(tmp_path, out, train, method="q2l"):
    pf = toy_params_file(tmp_path, out, train)
    env = {**os.environ, "MLC_PROGRESS": "lines"}
    done = subprocess.run([sys.executable, "-m", "mlc.train", str(pf), "--method", method], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stage = tmp_path / out / "rel" / method
    return stage, json.loads((stage / "result.json").read_text()), (stage / "train.log").read_text()


def test_bf16_training_with_every_speed_switch(tmp_path):
    stage, result, log = _train(tmp_path, "bf16", "epochs: 2, batch_size: 16, amp: auto, channels_last: true, "
                                                  "cudnn_benchmark: true, fused_adamw: true")
    assert "device cuda" in log and "autocast bfloat16" in log
    assert np.isfinite(result["test"]["mAP"])
    assert all(r["peak_memory_gb"] > 0 for r in result["history"])
    assert all(0 <= r["gpu_idle_fraction"] < 1 and 0 <= r["data_wait_fraction"] < 1 for r in result["history"])
    assert "amp_skipped_steps" not in result["history"][0]          # no GradScaler in bf16


def test_fp16_training_uses_the_grad_scaler(tmp_path):
    _, result, log = _train(tmp_path, "fp16", "epochs: 1, batch_size: 16, amp: fp16")
    assert "autocast float16" in log
    assert "amp_skipped_steps" in result["history"][0]
    assert np.isfinite(result["test"]["mAP"])


def test_scores_on_cuda_equal_scores_on_the_cpu(tmp_path):
    """A trained checkpoint scores the test split alike on both devices (fp32; TF32 off)."""
    from mlc.config.params import load_params
    from mlc.engine.loop import predict
    from mlc.runs.build import build_method, load_trained
    from mlc.runs.data import method_data
    _train(tmp_path, "x", "epochs: 1, batch_size: 16, amp: none")
    params = load_params(next(tmp_path.glob("p_x_*.yaml")))
    data = method_data(params, "q2l")
    from mlc.engine.loop import make_loader
    loader = make_loader(data.datasets["test"], 16, shuffle=False)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    scores = {}
    for device in ("cpu", "cuda"):
        model = load_trained(params, "q2l", device=device)
        method = build_method(params.methods["q2l"], len(data.labels), model=model)
        scores[device] = predict(model, method, loader, torch.device(device), "none", progress=False)["scores"]
    np.testing.assert_allclose(scores["cuda"], scores["cpu"], atol=1e-4, rtol=1e-3)


def test_torchrun_with_nccl_on_this_node(tmp_path):
    """The NCCL path: torchrun with one process per GPU here (2 when the node has 2 or more GPUs)."""
    n = min(2, torch.cuda.device_count())
    pf = toy_params_file(tmp_path, "nccl", "epochs: 1, batch_size: 16, amp: auto")
    env = {**os.environ, "MLC_PROGRESS": "lines"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                           "-m", "mlc.train", str(pf), "--method", "q2l"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (tmp_path / "nccl" / "rel" / "q2l" / "train.log").read_text()
    assert f"global batch 16 = {n} process(es)" in log and "device cuda:0" in log
