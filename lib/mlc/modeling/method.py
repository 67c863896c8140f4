"""What a method gives the training engine: its model, its loss, and how outputs become scores.

This module sits below both the engine and the models (the models' ``register_method`` builders return a
:class:`Method`; the engine trains one), so neither imports the other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn


def forward_images(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict:
    """The default forward: the model sees the images only."""
    return model(images)


def sigmoid_scores(out: dict) -> torch.Tensor:
    """The default scores: a sigmoid over the logits."""
    return torch.sigmoid(out["logits"].float())


@dataclass
class Method:
    """What a method gives the engine."""
    model: nn.Module
    # (outputs, targets) -> {"loss": scalar, ...}; None for a scorer that is never trained (loss reported as 0)
    loss_fn: Callable[[dict, torch.Tensor], dict] | None
    scores_fn: Callable[[dict], torch.Tensor] = field(default=sigmoid_scores)
    # (model, images, targets) -> outputs; SALGL passes the targets on (its memory counts them in training)
    forward_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], dict] = forward_images
    # (model, ema_model or None) after each optimizer step and EMA update
    on_step_end: Callable[[nn.Module, nn.Module | None], None] | None = None
