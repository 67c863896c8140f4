"""The few collective operations the engine needs; no-ops in a single process.

Multi-GPU training (torchrun) initialises the process group before calling the engine; every
function here then works across processes.
"""
from __future__ import annotations

import torch
import torch.distributed as td


def is_dist() -> bool:
    """Whether a process group is initialised (torchrun)."""
    return td.is_available() and td.is_initialized()


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that writes."""
    return not is_dist() or td.get_rank() == 0


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor over processes along dim 0 (sizes may differ between processes)."""
    if not is_dist():
        return t
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(td.get_world_size())]
    td.all_gather(sizes, n)
    max_n = int(max(s.item() for s in sizes))
    padded = torch.zeros((max_n, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    out = [torch.zeros_like(padded) for _ in sizes]
    td.all_gather(out, padded)
    return torch.cat([o[: int(s.item())] for o, s in zip(out, sizes)])


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes in place (identity in one process)."""
    if is_dist():
        td.all_reduce(t)
    return t
