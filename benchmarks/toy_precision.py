"""Why the toy recipes train in bf16 on a CPU with bf16 hardware: one toy training step in fp32 and in bf16.

    python benchmarks/toy_precision.py [--threads 1] [--json benchmarks/results_toy_precision.json]

For every toy method, ``benchmarks/train_step.py``'s step (forward, loss, backward, fused AdamW, channels-last;
synthetic batch of the method's toy batch size, random weights) on ``params/toy.yaml`` in its ``fast_fp32`` and
``fast_bf16`` modes, the latter through the engine's autocast (bf16, attention on the math path).  Then the toy
CLIP's pretraining step (``mlc.runs.toy_clip.contrastive_step``: batch 128, ``open_clip.ClipLoss``, AdamW) in fp32, in
bf16 with torch's default attention kernel (flash attention on the CPU) and in bf16 through the engine's
autocast (math path): the flash kernel's bf16 time is what made the math path the engine's choice.  One
thread by default, as run_all gives each of its two notebooks on 2 cores.  Medians over ``--steps`` steps.
Needs a CPU with bf16 hardware (AVX512-BF16 or AMX); elsewhere ``amp: bf16`` runs fp32 and there is nothing to
compare.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "benchmarks"))

TOY_LABELS = 30
METHODS = ["q2l", "q2l_linear", "salgl", "sgre", "mkt", "qks"]


def clip_step_seconds(mode: str, steps: int, warmup: int) -> float:
    """Median seconds of one toy-CLIP pretraining step; ``mode``: fp32, bf16_flash or bf16_engine."""
    import contextlib

    import open_clip

    from mlc.engine.precision import Autocast
    from mlc.modeling.clip import _register_configs
    from mlc.runs.toy_clip import contrastive_step
    _register_configs()
    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms("mlc-toy-clip", output_dict=True)
    tokenizer = open_clip.get_tokenizer("mlc-toy-clip")
    images = torch.randn(128, 3, 64, 64)
    texts = tokenizer(["a red circle and a blue star at the beach"] * 128)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = open_clip.ClipLoss()
    if mode == "fp32":
        context = contextlib.nullcontext
    elif mode == "bf16_flash":
        context = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    else:
        context = Autocast(torch.device("cpu"), "bf16")

    def step():
        contrastive_step(model, images, texts, loss_fn, opt, context)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--methods", nargs="*", default=METHODS)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results_toy_precision.json"))
    args = ap.parse_args(argv)
    import logging
    logging.disable(logging.WARNING)
    from train_step import measure

    from mlc.config.params import load_params
    from mlc.engine.precision import cpu_has_native_bf16
    if not cpu_has_native_bf16():
        sys.exit("this CPU has no bf16 hardware: amp: bf16 runs fp32 here")
    torch.set_num_threads(args.threads)
    params = load_params(ROOT / "params" / "toy.yaml")
    rows = []
    for name in args.methods:
        batch = params.methods[name].train.batch_size
        row = {"what": name, "batch": batch}
        for mode in ("fast_fp32", "fast_bf16"):
            r = measure(name, mode, torch.device("cpu"), batch, args.steps, 3, "params/toy.yaml", TOY_LABELS)
            row[mode.removeprefix("fast_")] = r["seconds_per_step"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    row = {"what": "toy CLIP pretraining", "batch": 128}
    for mode in ("fp32", "bf16_flash", "bf16_engine"):
        row[{"bf16_engine": "bf16"}.get(mode, mode)] = round(clip_step_seconds(mode, args.steps, 2), 4)
    rows.append(row)
    print(json.dumps(row), flush=True)
    info = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": args.threads}
    Path(args.json).write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")
    print(f"\n{'step':22} {'batch':>5} {'fp32 ms':>8} {'bf16 ms':>8} {'bf16/fp32':>9}")
    for r in rows:
        extra = f"   (bf16, flash attention: {1000 * r['bf16_flash']:.0f} ms)" if "bf16_flash" in r else ""
        print(f"{r['what']:22} {r['batch']:5d} {1000 * r['fp32']:8.1f} {1000 * r['bf16']:8.1f} "
              f"{r['bf16'] / r['fp32']:9.2f}{extra}")


if __name__ == "__main__":
    main()
