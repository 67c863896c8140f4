"""The benchmarks' own arithmetic (their timings are never asserted: see benchmarks/)."""
import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module             # as an import does: dataclasses look their module up there
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


def test_toy_epochs_chooses_per_model_the_fewest_epochs_within_the_tolerance():
    choose = _load("toy_epochs").choose
    h = lambda best: {"best": best}  # noqa: E731
    results = {"q2l": {"4": {"q2l": h(70.0), "q2l_linear": h(55.0)},
                       "6": {"q2l": h(75.9), "q2l_linear": h(60.0)},
                       "12": {"q2l": h(76.8), "q2l_linear": h(66.3)}},
               "mkt": {"2": {"mkt": h(35.2), "mkt_prompt": h(30.0)}, "5": {"mkt": h(35.4), "mkt_prompt": h(34.0)}}}
    # the method converges by 6, its slower baseline only by 12; a later stage keeps its own recipe
    assert choose(results, 1.0) == {"q2l": 6, "q2l_linear": 12, "mkt": 2}
    assert choose(results, 0.5)["q2l"] == 12


def test_toy_epochs_budget_sums_every_model_at_the_chosen_longest_and_shortest_candidates():
    mod = _load("toy_epochs")
    r = lambda s: {"best": 0.0, "train_seconds": s}  # noqa: E731
    results = {"q2l": {"4": {"q2l": r(40.0), "q2l_linear": r(20.0)}, "12": {"q2l": r(150.0), "q2l_linear": r(70.0)}},
               "mkt": {"2": {"mkt": r(20.0), "mkt_prompt": r(16.0)}, "5": {"mkt": r(70.0), "mkt_prompt": r(18.0)}}}
    b = mod.budget({"results": results, "choice": {"q2l": 12, "q2l_linear": 12, "mkt": 2}})
    # the later stage (mkt_prompt) is counted at its method's candidate
    assert b == {"chosen": 150 + 70 + 20 + 16, "longest": 150 + 70 + 70 + 18, "shortest": 40 + 20 + 20 + 16}


def test_toy_step_ops_puts_each_operator_in_one_kind_and_finds_what_each_step_is_made_of():
    ops = _load("toy_step_ops")
    assert ops.kind_of("aten::bernoulli_") == "random (dropout masks)"
    assert ops.kind_of("aten::convolution_backward") == "convolution"
    assert ops.kind_of("aten::mm") == ops.kind_of("aten::bmm") == "matrix products"
    assert ops.kind_of("aten::copy_") == "dtype casts and copies"
    assert ops.kind_of("aten::native_layer_norm_backward") == "normalisation"
    assert ops.kind_of("aten::tanh") == "element-wise and reductions"
    assert ops.kind_of("aten::some_new_operator") == "other"
    row = ops.profile_method("q2l_linear", "params/toy.yaml", 30, steps=1, warmup=1)
    assert row["seconds_per_step"] > 0 and all(k.startswith("aten::") for k in row["top_operators"])
    # what the step is made of, not how fast: the linear head has convolutions and no dropout, Q2L has both
    assert "convolution" in row["share_by_kind"] and "random (dropout masks)" not in row["share_by_kind"]
    q2l = ops.profile_method("q2l", "params/toy.yaml", 30, steps=1, warmup=1)
    assert {"convolution", "matrix products", "random (dropout masks)"} <= set(q2l["share_by_kind"])
