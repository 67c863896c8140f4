"""One training step of each method at its paper configuration, with the speed switches off and on.

    PYTHONPATH=lib python benchmarks/train_step.py                         # CPU: batch 2, 2 threads, fp32
    PYTHONPATH=lib python benchmarks/train_step.py --device cuda --batch 32 --steps 30 --json out.json

A step is what the engine does per optimizer step: forward, the method's loss, backward, AdamW (and
the AMP scaler).  Models are built at paper size with random weights (:func:`mlc.runs.build.untrained_method`,
nothing downloaded) and fed synthetic batches at the paper resolution, so the numbers are about speed
only.  A frozen BatchNorm (Q2L's ResNet) gets the statistics of the batch it normalises
(:func:`calibrate_frozen_batchnorm`), as pretrained weights would: with mean 0 and variance 1 a random
ResNet-101 overflows and every loss is NaN, which times other kernels than training does.  Settings ("modes"):

* ``baseline``: fp32, NCHW, the multi-tensor (foreach) AdamW, no cuDNN autotuning: the engine with
  every switch off (what the official code runs, apart from its AMP).
* ``fast_fp32``: channels_last, fused AdamW, cudnn.benchmark, still fp32 (the maths of the baseline).
* ``fast``: the same with ``amp: auto`` (bf16 autocast where the GPU has it, fp16 + GradScaler else);
  on the CPU it equals ``fast_fp32`` and is skipped.
* ``fast_fp16``: the same with fp16 autocast and the GradScaler (what GPUs without bf16 get).
* ``fast_bf16``: the same with bf16 autocast (``amp: bf16``), which on the CPU runs only where the CPU has bf16
  in hardware (AVX512-BF16 or AMX; elsewhere it equals ``fast_fp32`` and is skipped).
* ``compile`` (only with ``--compile``): ``fast`` plus torch.compile of the forward.

Reported per method and mode: seconds per step (median of the timed steps), images/s and, on CUDA, the
peak memory allocated.  ``--json`` writes the rows (with the device, torch version and settings).

Compute efficiency: the model FLOPs of one step (forward and backward, counted once per mode by torch's own
``torch.utils.flop_counter.FlopCounterMode``: matmuls, convolutions and attention; a multiply-add is 2 FLOPs),
the FLOP/s the timed steps reach, and that as a fraction of the device's peak in the step's precision: on a
GPU its datasheet's dense peak (:data:`GPU_PEAK_TFLOPS`), on a CPU the rate of a large matrix product measured
on the same threads (:func:`cpu_gemm_tflops`), which is what the CPU's matrix units give in practice.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from mlc.config.params import load_params  # noqa: E402
from mlc.engine.optim import make_adamw  # noqa: E402
from mlc.engine.precision import Autocast, cpu_has_native_bf16  # noqa: E402
from mlc.runs.build import DATASET_CLASSES, untrained_method  # noqa: E402

PAPER_CONFIGS = {"q2l": "params/q2l/coco_r101_448.yaml", "salgl": "params/salgl/coco_r101_448.yaml",
                 "sgre": "params/sgre/coco_r101_448.yaml", "mkt": "params/mkt/nuswide_vitb16.yaml",
                 "qks": "params/qks/nuswide_vitb16.yaml"}
MODES = {"baseline": dict(amp="none", channels_last=False, fused=False, cudnn_benchmark=False, compile=False),
         "fast_fp32": dict(amp="none", channels_last=True, fused=True, cudnn_benchmark=True, compile=False),
         "fast": dict(amp="auto", channels_last=True, fused=True, cudnn_benchmark=True, compile=False),
         "fast_fp16": dict(amp="fp16", channels_last=True, fused=True, cudnn_benchmark=True, compile=False),
         "fast_bf16": dict(amp="bf16", channels_last=True, fused=True, cudnn_benchmark=True, compile=False),
         "compile": dict(amp="auto", channels_last=True, fused=True, cudnn_benchmark=True, compile=True)}


def synthetic_batch(batch: int, size: int, classes: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=g)
    targets = (torch.rand(batch, classes, generator=g) < 3 / classes).float()
    targets[:, 0] = 1                                  # every image has a label (MKT's ranking loss needs one)
    return images.to(device), targets.to(device)


def calibrate_frozen_batchnorm(model: torch.nn.Module, forward) -> int:
    """Set every FrozenBatchNorm2d's running mean and variance to those of its input in one forward pass
    (``forward()``), in order, so that each layer sees normalised activations; returns how many were set."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    def set_stats(module, args):
        x = args[0].float()
        module.running_mean.copy_(x.mean((0, 2, 3)))
        module.running_var.copy_(x.var((0, 2, 3)))

    hooks = [m.register_forward_pre_hook(set_stats) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    with torch.no_grad():
        forward()
    for h in hooks:
        h.remove()
    return len(hooks)


# dense (no sparsity) datasheet peaks in TFLOP/s by precision; "fp32" is plain fp32 (no TF32)
GPU_PEAK_TFLOPS = {"H200": {"bf16": 989.4, "fp16": 989.4, "fp32": 66.9},
                   "H100": {"bf16": 989.4, "fp16": 989.4, "fp32": 66.9},
                   "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}}


def gpu_peak_tflops(device: torch.device, precision: str) -> float | None:
    name = torch.cuda.get_device_name(device)
    for key, peaks in GPU_PEAK_TFLOPS.items():
        if key in name:
            return peaks.get(precision)
    return None


_cpu_peaks: dict[str, float] = {}


def cpu_gemm_tflops(precision: str, size: int = 2048, repeats: int = 5) -> float:
    """TFLOP/s of a [size, size] x [size, size] matrix product on this CPU's threads (the best of ``repeats``),
    in fp32 or bf16: the practical peak the step's FLOP rate is set against."""
    if precision not in _cpu_peaks:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        _cpu_peaks[precision] = 2 * size ** 3 / best / 1e12
    return _cpu_peaks[precision]


def count_flops(step) -> int:
    """Model FLOPs of one call of ``step`` (forward and backward), by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclasses.dataclass
class Step:
    """One method's training step, ready to call: ``run()`` does forward, loss, backward and AdamW (through the
    compiled forward in the ``compile`` mode; ``run(model)`` steps the eager model)."""
    run: object
    model: torch.nn.Module
    mp: object                        # the method's params
    autocast: Autocast
    optimizer: torch.optim.Optimizer
    classes: int


def make_step(method_name: str, mode: str, device: torch.device, batch: int | None = None,
              params_file: str | None = None, classes: int | None = None) -> Step:
    """A training step of one method in one mode on a synthetic batch (``batch``: default the recipe's
    ``train.batch_size``; ``params_file``: default the method's paper config; ``classes``: default its dataset's);
    its recipe's ``train.freeze`` applies."""
    switches = MODES[mode]
    params = load_params(ROOT / (params_file or PAPER_CONFIGS[method_name]))
    mp = params.methods[method_name]
    classes = classes or DATASET_CLASSES[params.data.source]
    torch.manual_seed(0)
    method = untrained_method(mp, classes)
    model = method.model.to(device).train()
    if switches["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = switches["cudnn_benchmark"]
    from mlc.engine.optim import build_param_groups
    tp = dataclasses.replace(mp.train, fused_adamw=switches["fused"])
    optimizer = make_adamw(build_param_groups(model, mp.train), tp, device)
    autocast = Autocast(device, switches["amp"])
    scaler = torch.amp.GradScaler(device.type, enabled=autocast.dtype == torch.float16)
    net = torch.compile(model) if switches["compile"] else model
    images, targets = synthetic_batch(batch or mp.train.batch_size, mp.input.image_size, classes, device)
    calibrate_frozen_batchnorm(model, lambda: method.forward_fn(model, images[:8], targets[:8]))
    if switches["channels_last"]:
        images = images.contiguous(memory_format=torch.channels_last)

    def step(network=net):
        with autocast():
            out = method.forward_fn(network, images, targets)
            loss = method.loss_fn(out, targets)["loss"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    return Step(step, model, mp, autocast, optimizer, classes)


def measure(method_name: str, mode: str, device: torch.device, batch: int, steps: int, warmup: int,
            params_file: str | None = None, classes: int | None = None) -> dict:
    """Time ``steps`` training steps (after ``warmup``) of one method in one mode (see :func:`make_step`)."""
    made = make_step(method_name, mode, device, batch, params_file, classes)
    step, model, mp, autocast, optimizer, classes = (made.run, made.model, made.mp, made.autocast, made.optimizer,
                                                     made.classes)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t_first = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    warm_seconds = time.perf_counter() - t_first
    flops = count_flops(lambda: step(model))            # eager: the counter does not see into a compiled graph
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    per_step = statistics.median(times)
    row = {"method": method_name, "mode": mode, "params": params_file or PAPER_CONFIGS[method_name],
           "image_size": mp.input.image_size, "batch": batch, "classes": classes,
           "autocast": str(autocast.dtype).removeprefix("torch.") if autocast.enabled else "fp32",
           "fused_adamw": bool(optimizer.defaults.get("fused")), "steps": steps,
           "warmup_seconds": round(warm_seconds, 2),
           "seconds_per_step": round(per_step, 4), "images_per_second": round(batch / per_step, 1),
           "loss_finite": bool(torch.isfinite(loss).item())}
    precision = {"bfloat16": "bf16", "float16": "fp16"}.get(row["autocast"], "fp32")
    peak = gpu_peak_tflops(device, precision) if device.type == "cuda" else cpu_gemm_tflops(precision)
    achieved = flops / per_step / 1e12
    row.update({"gflops_per_step": round(flops / 1e9, 1), "gflops_per_image": round(flops / batch / 1e9, 2),
                "achieved_tflops": round(achieved, 4),
                "peak_tflops": round(peak, 3) if peak else None,
                "peak_kind": "datasheet dense" if device.type == "cuda" else f"measured {precision} GEMM",
                "peak_fraction": round(achieved / peak, 4) if peak else None})
    if device.type == "cuda":
        row["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", default=",".join(PAPER_CONFIGS))
    ap.add_argument("--params", default=None, help="one params file for every method (default: each one's paper "
                                                   "config), e.g. params/toy.yaml")
    ap.add_argument("--classes", type=int, default=None, help="label count (default: the dataset's)")
    ap.add_argument("--modes", default=None, help="comma-separated (default: baseline,fast_fp32 and, on CUDA, fast; "
                                                  "on a CPU with bf16 hardware, fast_bf16)")
    ap.add_argument("--compile", action="store_true", help="add the torch.compile mode")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--json", default=None, help="write the rows here (rewritten after each measurement)")
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    default_modes = ["baseline", "fast_fp32"] + (["fast"] if device.type == "cuda" else
                                                 ["fast_bf16"] if cpu_has_native_bf16() else [])
    modes = args.modes.split(",") if args.modes else default_modes
    if args.compile:
        modes.append("compile")
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "threads": args.threads, "python": platform.python_version()}
    rows = []
    for name in args.methods.split(","):
        for mode in modes:
            try:
                row = measure(name, mode, device, args.batch, args.steps, args.warmup, args.params, args.classes)
            except Exception as e:                     # one failing mode must not hide the others' numbers
                row = {"method": name, "mode": mode, "error": f"{type(e).__name__}: {e}"[:500]}
            with contextlib.suppress(Exception):
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    _table(rows)


def _table(rows: list[dict]) -> None:
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return
    base = {r["method"]: r["seconds_per_step"] for r in ok if r["mode"] == "baseline"}
    print(f"\n{'method':8} {'mode':10} {'precision':9} {'s/step':>8} {'img/s':>8} {'vs baseline':>11} {'peak GB':>8} "
          f"{'GFLOP/img':>9} {'TFLOP/s':>8} {'of peak':>7}")
    for r in ok:
        speedup = base.get(r["method"], float("nan")) / r["seconds_per_step"]
        fraction = r.get("peak_fraction")
        print(f"{r['method']:8} {r['mode']:10} {r['autocast']:9} {r['seconds_per_step']:8.3f} "
              f"{r['images_per_second']:8.1f} {speedup:10.2f}x {r.get('peak_memory_gb', float('nan')):8.2f} "
              f"{r['gflops_per_image']:9.1f} {r['achieved_tflops']:8.3f} "
              f"{'' if fraction is None else f'{100 * fraction:6.1f}%'}")


if __name__ == "__main__":
    main()
