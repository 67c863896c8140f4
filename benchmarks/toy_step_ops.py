"""Where a toy training step's CPU time goes, by kind of operator: what could make the toy run faster, and what
is the CPU's own (issue 22, part 4).

    python benchmarks/toy_step_ops.py [--params params/toy.yaml] [--methods q2l,q2l_linear,salgl,sgre] [--threads 1]

Each method's step is :func:`train_step.make_step` in the toy recipe's precision (``fast_bf16`` where the CPU has
bf16 in hardware, else ``fast_fp32``), with the recipe's frozen layers, on a synthetic batch of the recipe's size,
one thread (as ``run_all`` trains).  torch's profiler records ``--steps`` steps after a warm-up; each operator's
own CPU time ("self") is put in one kind (:data:`KINDS`, first match) and reported as a share of the step.  The
profiler's own cost inflates the many small operators a little; the shares are for comparing kinds, the
seconds per step of ``benchmarks/train_step.py`` for speed.

One kind is the CPU's vendor's: dropout draws its mask with ``bernoulli_``, which PyTorch hands to MKL's vector
generator on Intel CPUs only and draws one number at a time from its own generator elsewhere (AMD), so the
``random`` share differs between CPU kinds (``bernoulli_uses_mkl`` in the output says which path ran).
Writes ``benchmarks/results_toy_step_ops.json`` with the CPU model.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "lib"))

from seed_spread import cpu_model  # noqa: E402
from train_step import make_step  # noqa: E402

from mlc.engine.precision import cpu_has_native_bf16  # noqa: E402

# (kind, pattern on the aten operator's name): the first that matches
KINDS = [("random (dropout masks)", r"bernoulli|uniform_|random_|native_dropout$"),
         ("convolution", r"convolution|conv2d|mkldnn_conv"),
         ("matrix products", r"^aten::(mm|bmm|addmm|baddbmm|linear|matmul|_scaled_dot|dot|mv)"),
         ("dtype casts and copies", r"^aten::(copy_|_to_copy|to|clone|contiguous)$"),
         ("optimizer", r"adam|Optimizer"),
         ("normalisation", r"norm"),
         ("softmax", r"softmax"),
         ("element-wise and reductions", r"^aten::(mul|add|sub|div|tanh|sigmoid|relu|threshold|clamp|where|sum|mean|"
                                         r"exp|log|pow|neg|abs|max|min|all|any|sqrt|rsqrt|fill_|zero_|masked|eq|ne|"
                                         r"gt|lt|ge|le|sign|cat|stack|index|gather|scatter|expand|t$)")]


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if re.search(pattern, name):
            return kind
    return "other"


def bernoulli_uses_mkl() -> bool:
    """Whether this CPU takes PyTorch's MKL path for ``bernoulli_(p)`` (an Intel CPU with an MKL build)."""
    from mlc.runs.toy_backbone import cpu_kind
    return "vendor_id GenuineIntel" in cpu_kind(torch.get_num_threads())["cpuid"] and torch.backends.mkl.is_available()


def profile_method(name: str, params: str, classes: int, steps: int, warmup: int) -> dict:
    from torch.profiler import ProfilerActivity, profile
    mode = "fast_bf16" if cpu_has_native_bf16() else "fast_fp32"
    made = make_step(name, mode, torch.device("cpu"), params_file=params, classes=classes)
    for _ in range(warmup):
        made.run()
    t0 = time.perf_counter()
    for _ in range(steps):
        made.run()
    plain = (time.perf_counter() - t0) / steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            made.run()
    by_kind: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith("aten::") or "Optimizer" in event.key:
            kind = kind_of(event.key)
            by_kind[kind] = by_kind.get(kind, 0.0) + event.self_cpu_time_total
    total = sum(by_kind.values())
    top = sorted(((e.key, e.self_cpu_time_total) for e in prof.key_averages() if e.key.startswith("aten::")),
                 key=lambda kv: -kv[1])[:8]
    return {"method": name, "mode": mode, "batch": made.mp.train.batch_size, "seconds_per_step": round(plain, 4),
            "share_by_kind": {k: round(v / total, 3) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            "top_operators": {k: round(v / total, 3) for k, v in top}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params/toy.yaml")
    ap.add_argument("--methods", default="q2l,q2l_linear,salgl,sgre")
    ap.add_argument("--classes", type=int, default=30, help="labels (default: the toy world's 30 objects, what "
                                                                "the closed-set recipes train on)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_toy_step_ops.json")
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.methods.split(","):
        row = profile_method(name, args.params, args.classes, args.steps, args.warmup)
        rows.append(row)
        shares = ", ".join(f"{k} {100 * v:.0f} %" for k, v in row["share_by_kind"].items())
        print(f"{name}: {1000 * row['seconds_per_step']:.0f} ms a step ({row['mode']}); {shares}", flush=True)
    record = {"params": args.params, "made": time.strftime("%Y-%m-%d"), "cpu": cpu_model(),
              "torch": torch.__version__, "threads": args.threads, "classes": args.classes,
              "bernoulli_uses_mkl": bernoulli_uses_mkl(), "rows": rows}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
