"""Building blocks shared by the methods (DETR-style, batch-first tokens [B, N, D])."""
from __future__ import annotations

import math

import torch
from torch import nn


def sine_position_encoding(h: int, w: int, dim: int, temperature: float = 10000.0, eps: float = 1e-6) -> torch.Tensor:
    """DETR's normalised 2-D sine encoding as Query2Label and SGRE compute it, [h*w, dim] row-major.

    Per axis n = dim / 2 features; positions 1..h are divided by (h + eps) and scaled by 2 pi;
    channel j uses frequency temperature ** (2 floor(j / 2) / n), even channels sine, odd cosine;
    the y block precedes the x block.
    """
    if dim % 2:
        raise ValueError(f"positional encoding needs an even dimension, got {dim}")
    n = dim // 2
    y = torch.arange(1, h + 1, dtype=torch.float32)[:, None].expand(h, w)
    x = torch.arange(1, w + 1, dtype=torch.float32)[None, :].expand(h, w)
    y = y / (h + eps) * 2 * math.pi
    x = x / (w + eps) * 2 * math.pi
    dim_t = temperature ** (2 * torch.div(torch.arange(n), 2, rounding_mode="floor") / n)
    pos_x = x[..., None] / dim_t                                  # [h, w, n]
    pos_y = y[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=3).flatten(2)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=3).flatten(2)
    return torch.cat((pos_y, pos_x), dim=2).reshape(h * w, dim)


class FeedForward(nn.Module):
    """Linear -> ReLU -> dropout -> Linear (the names match the official layers: linear1, linear2)."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.linear2(self.dropout(torch.relu(self.linear1(x))))


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer; the positional term is added to queries and keys only."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        q = k = src if pos is None else src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(q, k, src, need_weights=False)[0]))
        return self.norm2(src + self.dropout2(self.ffn(src)))


class DecoderLayer(nn.Module):
    """Label-query decoder layer: [self-attention ->] cross-attention -> FFN, post-norm.

    Returns the new queries and the head-averaged cross-attention weights [B, K, N].
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1, self_attention: bool = False):
        super().__init__()
        if self_attention:
            self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
            self.norm_self, self.dropout_self = nn.LayerNorm(dim), nn.Dropout(dropout)
        else:
            self.self_attn = None
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_cross, self.dropout_cross = nn.LayerNorm(dim), nn.Dropout(dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.norm_ffn, self.dropout_ffn = nn.LayerNorm(dim), nn.Dropout(dropout)

    def forward(self, tgt, memory, pos, query_pos):
        if self.self_attn is not None:
            q = k = tgt + query_pos
            tgt = self.norm_self(tgt + self.dropout_self(self.self_attn(q, k, tgt, need_weights=False)[0]))
        out, attn = self.cross_attn(tgt + query_pos, memory + pos, memory, need_weights=True,
                                    average_attn_weights=True)
        tgt = self.norm_cross(tgt + self.dropout_cross(out))
        tgt = self.norm_ffn(tgt + self.dropout_ffn(self.ffn(tgt)))
        return tgt, attn


class GroupWiseLinear(nn.Module):
    """One linear classifier per label on its own feature: logit_k = <W_k, h_k> + b_k."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        self.bias = nn.Parameter(torch.empty(num_classes))
        bound = 1 / math.sqrt(dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # h [B, K, D] -> [B, K]
        return (h * self.weight).sum(-1) + self.bias
