"""The optimiser set-up of a training stage: which parameters train (frozen prefixes), their groups (per-group
learning rates and weight decay; with ``decay_1d_params: false`` none on biases and norms, as MKT's official code),
AdamW and the learning-rate schedules."""
from __future__ import annotations

import math
import re

import torch
from torch import nn

from mlc.config.params import TrainParams


def is_frozen(name: str, tp: TrainParams) -> bool:
    """Whether parameter ``name`` matches one of ``tp.freeze`` (regular expressions, ``re.search``)."""
    return any(re.search(pat, name) for pat in tp.freeze)


def trainable_parameters(model: nn.Module, tp: TrainParams) -> int:
    """How many parameters training will update: those that require gradients and match no ``tp.freeze``."""
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not is_frozen(n, tp))


def build_param_groups(model: nn.Module, tp: TrainParams) -> list[dict]:
    """Freeze parameters matching ``tp.freeze``; group the others by the first ``tp.param_groups`` match."""
    groups = [{"params": [], "lr_scale": g.lr_scale, "weight_decay": tp.weight_decay if g.weight_decay is None
               else g.weight_decay, "name": g.match} for g in tp.param_groups]
    default = {"params": [], "lr_scale": 1.0, "weight_decay": tp.weight_decay, "name": "default"}
    for name, p in model.named_parameters():
        if is_frozen(name, tp):
            p.requires_grad_(False)
        if not p.requires_grad:
            continue
        for spec, group in zip(tp.param_groups, groups):
            if re.search(spec.match, name):
                group["params"].append(p)
                break
        else:
            default["params"].append(p)
    out = [g for g in groups + [default] if g["params"]]
    if not tp.decay_1d_params:            # each group split: its 1-D parameters without decay
        out = [part for g in out for part in (
            {**g, "params": [p for p in g["params"] if p.ndim > 1]},
            {**g, "params": [p for p in g["params"] if p.ndim <= 1], "weight_decay": 0.0,
             "name": f"{g['name']} (no decay)"}) if part["params"]]
    for g in out:
        g["lr"] = tp.lr * g["lr_scale"]
    if not out:
        raise ValueError("every parameter is frozen: nothing to train (check train.freeze)")
    return out


def build_scheduler(optimizer, tp: TrainParams, steps_per_epoch: int):
    """Returns (scheduler, per_iteration)."""
    total = tp.epochs * steps_per_epoch
    if tp.scheduler == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total,
                                                   pct_start=tp.pct_start), True
    if tp.scheduler == "cosine":
        warm = tp.warmup_epochs * steps_per_epoch
        floor = tp.min_lr / tp.lr if tp.lr > 0 else 0.0

        def factor(step):
            if step < warm:
                return step / warm
            progress = (step - warm) / max(1, total - warm)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True
    if tp.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=tp.plateau_factor,
                                                          patience=tp.plateau_patience), False
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0), True


def make_adamw(groups: list[dict], tp: TrainParams, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the parameter groups: the fused kernel when ``train.fused_adamw`` and torch has one for the
    device (CUDA; the CPU from torch 2.4), else the multi-tensor (foreach) one."""
    fused = bool(tp.fused_adamw) and device.type in ("cuda", "cpu")
    try:
        return torch.optim.AdamW(groups, lr=tp.lr, weight_decay=tp.weight_decay, fused=fused or None)
    except RuntimeError:                  # an older torch without a fused kernel for this device
        return torch.optim.AdamW(groups, lr=tp.lr, weight_decay=tp.weight_decay)
