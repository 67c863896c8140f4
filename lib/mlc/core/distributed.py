"""Processes of a torchrun job: the process group, who writes, and the few collectives the kit needs.

``torchrun --nproc_per_node N -m mlc.train ...`` starts N processes with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in their environment; :func:`init_from_env` joins them into one process group (NCCL
with one GPU per process, gloo on the CPU).  Outside torchrun every function here is a no-op for one
process, so the same code trains in a notebook kernel, in ``python -m mlc.train`` and under torchrun.
"""
from __future__ import annotations

import contextlib
import datetime
import os

import torch
import torch.distributed as td


def is_dist() -> bool:
    """Whether a process group is initialised (torchrun)."""
    return td.is_available() and td.is_initialized()


def rank() -> int:
    """This process's rank (0 outside torchrun)."""
    return td.get_rank() if is_dist() else 0


def world_size() -> int:
    """How many processes train together (1 outside torchrun)."""
    return td.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that writes."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def init_from_env(device: str = "auto", timeout_minutes: float = 30) -> bool:
    """Join the torchrun job (once): NCCL and ``cuda:LOCAL_RANK`` when GPUs are used, else gloo.  Returns
    whether a process group is up.  ``device`` is the params' ``train.device``."""
    if is_dist() or not launched_by_torchrun():
        return is_dist()
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local} but this node has {torch.cuda.device_count()} GPU(s): start "
                               f"torchrun with --nproc_per_node at most {torch.cuda.device_count()}")
        torch.cuda.set_device(local)
    td.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return True


def shutdown() -> None:
    """Leave the process group (at the end of a torchrun process)."""
    if is_dist():
        td.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """The GPU of this process under torchrun (``cuda:LOCAL_RANK``); ``device`` otherwise."""
    if device.type == "cuda" and device.index is None and is_dist():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def barrier() -> None:
    """Wait for every process (no-op in one process)."""
    if is_dist():
        td.barrier()


def broadcast_object(obj=None, src: int = 0):
    """Rank ``src``'s ``obj`` on every process."""
    if not is_dist():
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=src)
    return box[0]


class PeerFailed(RuntimeError):
    """Rank 0 failed in a block the others were waiting for; rank 0 reports the error itself."""


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first (e.g. writes a cache) while the others wait; then the others run it and
    find the work done.  An error on rank 0 is raised on every process, so none waits forever."""
    if not is_dist():
        yield
        return
    error = None
    if is_main_process():
        try:
            yield
        except BaseException as e:          # told to the others, then raised here
            error = e
        failed = broadcast_object(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        return
    failed = broadcast_object(None)
    if failed is not None:
        raise PeerFailed(f"rank 0 failed: {failed}")
    yield


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


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Maximum of a tensor over processes in place (identity in one process)."""
    if is_dist():
        td.all_reduce(t, op=td.ReduceOp.MAX)
    return t
