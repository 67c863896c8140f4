"""Losses shared by the methods.

Targets use the manifest convention: 1 positive, 0 negative, -1 unknown.
"""
from __future__ import annotations

import torch
from torch import nn

from mlc.core.registry import LOSSES


class AsymmetricLoss(nn.Module):
    """ASL, "optimised" variant, as Query2Label, SALGL, SGRE and QKS train with it.

    With p = sigmoid(x) and p_neg = min(1 - p + clip, 1) (clip = 0: no shift)::

        L = y log(max(p, eps)) + (1 - y) log(max(p_neg, eps))
        w = (1 - p y - p_neg (1 - y)) ** (gamma_pos y + gamma_neg (1 - y))     # focusing weight
        loss = -sum(L * w) / B / C * 1000                                     # reduction "official"

    ``detach_focal=True`` (the official ``--dtgfl``) computes w without gradient.  Unknown targets
    (-1) are excluded from the sum when ``mask_unknown`` is set (the denominator stays B x C, so the
    scale matches the official code when nothing is unknown); without it they count as negatives,
    which is what the official code does with its clamped targets.
    Reductions: "official" (x1000 / (B C)), "mean" (over known cells), "sum".
    """

    def __init__(self, gamma_neg: float = 2.0, gamma_pos: float = 0.0, clip: float = 0.0, eps: float = 1e-5,
                 detach_focal: bool = True, reduction: str = "official", mask_unknown: bool = True):
        super().__init__()
        if reduction not in ("official", "mean", "sum"):
            raise ValueError(f"reduction must be 'official', 'mean' or 'sum', got {reduction!r}")
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps
        self.detach_focal, self.reduction, self.mask_unknown = detach_focal, reduction, mask_unknown

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of logits [B, C] against 1/0/-1 targets (-1 = unknown, masked when asked)."""
        logits = logits.float()
        known = (targets >= 0).float() if self.mask_unknown else torch.ones_like(logits)
        y = targets.float().clamp(min=0)
        p = torch.sigmoid(logits)
        p_neg = 1 - p
        if self.clip and self.clip > 0:
            p_neg = (p_neg + self.clip).clamp(max=1)
        loss = y * torch.log(p.clamp(min=self.eps)) + (1 - y) * torch.log(p_neg.clamp(min=self.eps))
        if self.gamma_neg > 0 or self.gamma_pos > 0:
            with torch.set_grad_enabled(not self.detach_focal and torch.is_grad_enabled()):
                pt = p * y + p_neg * (1 - y)
                w = torch.pow(1 - pt, self.gamma_pos * y + self.gamma_neg * (1 - y))
            loss = loss * w
        loss = -(loss * known)
        if self.reduction == "official":
            return loss.sum() / logits.shape[0] / logits.shape[1] * 1000
        if self.reduction == "mean":
            return loss.sum() / known.sum().clamp(min=1)
        return loss.sum()


class MaskedBCE(nn.Module):
    """Binary cross-entropy on logits, mean over known cells; unknown targets (-1) are masked out, or with
    ``mask_unknown=False`` count as negatives (QKS's ``bce``; ``mbce`` masks them)."""

    def __init__(self, mask_unknown: bool = True):
        super().__init__()
        self.mask_unknown = mask_unknown

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy over the known cells."""
        known = (targets >= 0).float() if self.mask_unknown else torch.ones_like(logits, dtype=torch.float)
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), targets.float().clamp(min=0),
                                                              reduction="none")
        return (loss * known).sum() / known.sum().clamp(min=1)


class RankingLoss(nn.Module):
    """The BiAM/LESA pairwise hinge ranking loss of MKT and QKS (``ranking_lossT``), margin 1.

    Columns without any known cell in the batch are dropped; per image, every (negative i, positive j)
    pair gives max(0, 1 + s_i - s_j); an image's loss is their sum divided by the number of violating
    pairs (+1e-8), and the batch loss the mean over images.  Unknown cells (-1) take part in no pair.
    """

    def __init__(self, margin: float = 1.0):
        super().__init__()
        self.margin = margin

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Pairwise ranking loss: every positive above every negative of its image by a margin."""
        cols = (targets != -1).any(0)
        s, t = scores[:, cols].float(), targets[:, cols]
        pos, neg = (t == 1).float(), (t == 0).float()
        hinge = torch.relu(self.margin + s[:, :, None] - s[:, None, :])    # [B, i, j] = 1 + s_i - s_j
        hinge = hinge * neg[:, :, None] * pos[:, None, :]
        violations = (hinge > 0).float().sum((1, 2))
        return (hinge.sum((1, 2)) / (violations + 1e-8)).mean()


# loss name in the params (``loss.name``) -> builder from a ``LossParams``; the params accept exactly these names
LOSSES.register("asl", lambda cfg: AsymmetricLoss(
    gamma_neg=cfg.gamma_neg, gamma_pos=cfg.gamma_pos, clip=cfg.clip, eps=cfg.eps, detach_focal=cfg.detach_focal,
    reduction=cfg.reduction, mask_unknown=cfg.mask_unknown))
LOSSES.register("bce", lambda cfg: MaskedBCE(cfg.mask_unknown))
LOSSES.register("rank", lambda cfg: RankingLoss())


def build_loss(cfg) -> nn.Module:
    """Loss from a ``LossParams`` (see :mod:`mlc.config.params`); an unknown name is a KeyError listing the known."""
    return LOSSES.get(cfg.name)(cfg)
