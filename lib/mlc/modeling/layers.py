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
        """Apply the wrapped layers."""
        return self.linear2(self.dropout(torch.relu(self.linear1(x))))


class EncoderLayer(nn.Module):
    """Transformer encoder layer (DETR's); the positional term is added to queries and keys only.

    Post-norm by default, as Query2Label, SALGL and SGRE use it; ``pre_norm`` is SGRE's
    ``--normalize-before``.  Parameter names follow ``nn.TransformerEncoderLayer`` (self_attn,
    norm1, norm2) with the two FFN linears under ``ffn``.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1, pre_norm: bool = False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, src: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """One encoder layer over tokens [B, N, D] (``pos`` added to queries and keys)."""
        if self.pre_norm:
            x = self.norm1(src)
            q = k = x if pos is None else x + pos
            src = src + self.dropout1(self.self_attn(q, k, x, need_weights=False)[0])
            return src + self.dropout2(self.ffn(self.norm2(src)))
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
        """One decoder layer: label queries attend to each other, then to the image memory."""
        if self.self_attn is not None:
            q = k = tgt + query_pos
            tgt = self.norm_self(tgt + self.dropout_self(self.self_attn(q, k, tgt, need_weights=False)[0]))
        out, attn = self.cross_attn(tgt + query_pos, memory + pos, memory, need_weights=True,
                                    average_attn_weights=True)
        tgt = self.norm_cross(tgt + self.dropout_cross(out))
        tgt = self.norm_ffn(tgt + self.dropout_ffn(self.ffn(tgt)))
        return tgt, attn


class GroupWiseLinear(nn.Module):
    """One linear classifier per label on its own feature: logit_k = <W_k, h_k> + b_k.

    Query2Label calls it GroupWiseLinear, SALGL and SGRE ``Element_Wise_Layer``: the same maths and the
    same U(+-1/sqrt(D)) initialisation.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        self.bias = nn.Parameter(torch.empty(num_classes))
        bound = 1 / math.sqrt(dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # h [B, K, D] -> [B, K]
        """Per-label features [B, C, D] -> logits [B, C] (one linear classifier per label)."""
        return (h * self.weight).sum(-1) + self.bias


class LowRankBilinearAttention(nn.Module):
    """Label-to-token attention of SALGL and SGRE (low-rank bilinear pooling, att_dim 1024 officially).

    For token x_n [D] and label embedding e_c [E]::

        score[c, n] = w_t . (W_h tanh(W_1 x_n * W_2 e_c) + b_h) + b_t       # * is element-wise
        alpha[c, :] = softmax_n(score[c, :] / tau)
        feature_c   = sum_n alpha[c, n] x_n

    The official code materialises W_h tanh(.) as [B, C, N, att_dim] before the last linear (8 GB at
    B = 128, C = 80, N = 196 in fp32).  Both layers after the tanh are linear, so with
    ``fuse_score=True`` they are applied as one vector w = W_h^T w_t and bias w_t . b_h + b_t: the same
    function and the same gradients for W_h, b_h, w_t, b_t, without the att_dim x att_dim matmul.
    ``label_chunk`` computes the scores a chunk of labels at a time (gradient checkpointing per chunk
    while training), bounding the [B, chunk, N, att_dim] intermediate.  Parameter names are kit names;
    the converters map the official ``linear1/linear2/hidden_linear/target_linear`` onto them.
    """

    def __init__(self, dim: int, embed_dim: int, att_dim: int = 1024, tau: float = 1.0,
                 fuse_score: bool = True, label_chunk: int | None = None):
        super().__init__()
        self.token_proj = nn.Linear(dim, att_dim, bias=False)      # official attention.linear1
        self.label_proj = nn.Linear(embed_dim, att_dim, bias=False)  # official attention.linear2
        self.hidden = nn.Linear(att_dim, att_dim)                  # official attention.hidden_linear
        self.score = nn.Linear(att_dim, 1)                         # official attention.target_linear
        self.tau, self.fuse_score, self.label_chunk = tau, fuse_score, label_chunk

    def _scores(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """u [B, N, a], v [C', a] -> scores [B, C', N]."""
        joint = torch.tanh(u[:, None] * v[None, :, None])            # [B, C', N, a]
        if self.fuse_score:
            w = self.score.weight @ self.hidden.weight                   # [1, a]
            b = self.score.weight @ self.hidden.bias + self.score.bias   # [1]
            return (joint @ w[0]) + b
        return self.score(self.hidden(joint)).squeeze(-1)

    def forward(self, tokens: torch.Tensor, label_embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, N, D], label_embed [C, E] -> (features [B, C, D], alpha [B, C, N])."""
        u = self.token_proj(tokens)                                  # [B, N, a]
        v = self.label_proj(label_embed)                             # [C, a]
        chunk = self.label_chunk or v.shape[0]
        parts = []
        for start in range(0, v.shape[0], chunk):
            vc = v[start:start + chunk]
            if torch.is_grad_enabled() and self.label_chunk:
                from torch.utils.checkpoint import checkpoint
                parts.append(checkpoint(self._scores, u, vc, use_reentrant=False))
            else:
                parts.append(self._scores(u, vc))
        scores = torch.cat(parts, dim=1) / self.tau                 # [B, C, N]
        alpha = scores.softmax(dim=-1)
        return alpha @ tokens, alpha
