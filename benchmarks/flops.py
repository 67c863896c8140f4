"""Model FLOPs of one training step of each method at its paper configuration, by module (issue 24).

    PYTHONPATH=lib python benchmarks/flops.py                  # every method, batch 1, on the meta device
    PYTHONPATH=lib python benchmarks/flops.py --methods q2l --json flops.json

Counted by torch's own ``torch.utils.flop_counter.FlopCounterMode`` over the forward, the method's loss and the
backward, with the paper config's frozen parameters frozen, as ``train_step.py`` counts them (matmuls,
convolutions and attention; a multiply-add is 2 FLOPs), here on the meta device: shapes only, no arithmetic, so
the paper sizes cost nothing.  Reported per image: the step's total, its forward and backward, and the forward per
top-level module of the model (the backbone against the method's own parts; the counter cannot attribute the
backward to modules), which says where a step's work is before any profile says where its time goes.  A frozen
part costs its forward and, where something before it trains, the backward to its input, but no weight
gradients: MKT's backward is far below twice its forward.  The fraction of a device's peak needs a time:
``train_step.py`` reports it beside its step times.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_step import PAPER_CONFIGS, synthetic_batch  # noqa: E402

from mlc.config.params import load_params  # noqa: E402
from mlc.engine.optim import build_param_groups  # noqa: E402
from mlc.runs.build import DATASET_CLASSES, untrained_method  # noqa: E402


def count(method_name: str, batch: int = 1, device: str = "meta") -> dict:
    """FLOPs of one step (forward, loss, backward) of ``method_name`` at its paper config: total and by the
    model's top-level modules."""
    from torch.utils.flop_counter import FlopCounterMode
    params = load_params(ROOT / PAPER_CONFIGS[method_name])
    mp = params.methods[method_name]
    classes = DATASET_CLASSES[params.data.source]
    torch.manual_seed(0)
    method = untrained_method(mp, classes)
    model = method.model.to(device).train()
    build_param_groups(model, mp.train)           # train.freeze: a frozen layer computes no weight gradients
    images, targets = synthetic_batch(batch, mp.input.image_size, classes, torch.device("cpu"))
    images, targets = images.to(device), targets.to(device)
    with FlopCounterMode(display=False, depth=2) as forward:
        out = method.forward_fn(model, images, targets)
        loss = method.loss_fn(out, targets)["loss"]
    with FlopCounterMode(display=False, depth=2) as backward:     # the counter cannot tell the backward's modules
        loss.backward()
    by_module = forward.get_flop_counts()
    total = forward.get_total_flops() + backward.get_total_flops()
    top = {}
    root = type(model).__name__
    children: dict[str, dict[str, int]] = {}      # each top-level child: its keys, by depth
    for name, ops in by_module.items():
        parts = name.split(".")
        if parts[0] == root and len(parts) >= 2:
            children.setdefault(parts[1], {})[name] = sum(ops.values())
    for child, keys in children.items():
        # the outermost modules that ran: the child itself, or its parts where its own forward was not called (a
        # ModuleList; MKT's ViT, whose blocks the kit calls one by one)
        outermost = [k for k in keys if not any(k.startswith(a + ".") for a in keys if a != k)]
        top[child] = sum(keys[k] for k in outermost)
    # the counter's module attribution is unreliable where a module runs under another's forward more than once
    # (MKT's teacher, QKS's frozen CLIP): a breakdown that adds up to more than the forward is not reported
    consistent = sum(top.values()) <= 1.01 * forward.get_total_flops()
    return {"method": method_name, "params": PAPER_CONFIGS[method_name], "image_size": mp.input.image_size,
            "classes": classes, "gflops_per_image": round(total / batch / 1e9, 2),
            "forward_gflops_per_image": round(forward.get_total_flops() / batch / 1e9, 2),
            "backward_gflops_per_image": round(backward.get_total_flops() / batch / 1e9, 2),
            "forward_by_module_gflops_per_image": {k: round(v / batch / 1e9, 2) for k, v in
                                                   sorted(top.items(), key=lambda kv: -kv[1])} if consistent else
            "not attributable (the counter's modules add up to more than the forward)"}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(PAPER_CONFIGS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="meta", help="meta (shapes only; a loss that reads a value back, as MKT's, "
                                                     "runs on the CPU) or cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    rows = []
    for name in args.methods.split(","):
        try:
            row = count(name, args.batch, args.device)
        except RuntimeError as e:
            if args.device != "meta" or "meta" not in str(e):
                raise
            row = {**count(name, args.batch, "cpu"), "device": "cpu"}
        rows.append(row)
        by_module = row["forward_by_module_gflops_per_image"]
        modules = ", ".join(f"{k} {v}" for k, v in by_module.items()) if isinstance(by_module, dict) else by_module
        print(f"{name:6} {row['image_size']:4d} px  {row['gflops_per_image']:8.2f} GFLOP/image per step = forward "
              f"{row['forward_gflops_per_image']} ({modules}) + backward {row['backward_gflops_per_image']}",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": args.device, "batch": args.batch, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
