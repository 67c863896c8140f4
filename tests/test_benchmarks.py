"""The benchmarks' own arithmetic (their timings are never asserted: see benchmarks/)."""
import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_step_counts_a_step_s_model_flops_with_torch_s_counter():
    ts = _load("train_step")
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(8, 64, requires_grad=True)
    # forward x @ W^T, backward grad_x and grad_W: three [8 x 64 x 32] products of 2 FLOPs a multiply-add
    assert ts.count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 8 * 64 * 32
    row = ts.measure("q2l", "baseline", torch.device("cpu"), batch=2, steps=1, warmup=0,
                     params_file="params/toy.yaml", classes=30)
    assert row["loss_finite"] and row["gflops_per_step"] > 0
    assert abs(2 * row["gflops_per_image"] - row["gflops_per_step"]) < 0.1
    assert row["peak_kind"] == "measured fp32 GEMM" and 0 < row["peak_fraction"] < 2
