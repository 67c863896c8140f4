"""Mixed precision: which autocast dtype a recipe's ``amp`` means on a device, and the autocast context the loop
runs its forward passes in (bf16 on a CPU only where it has bf16 hardware)."""
from __future__ import annotations

import contextlib

import torch


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX): there oneDNN's bf16 convolutions
    and matrix products make a toy training step take 0.64 to 0.82 of its fp32 time
    (``benchmarks/toy_precision.py``); elsewhere bf16 is emulated, which the kit does not rely on."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device``; None for fp32.  On CUDA, ``auto`` is bf16 where the
    GPU supports it (Ampere and later), else fp16 with a GradScaler.  On the CPU only ``bf16`` autocasts, and
    only where the CPU has bf16 in hardware (:func:`cpu_has_native_bf16`); ``fp16`` and ``auto`` run fp32 there,
    so that the paper configs (fp16) compute on a CPU what they always did."""
    if amp == "none":
        return None
    if device.type == "cpu":
        return torch.bfloat16 if amp == "bf16" and cpu_has_native_bf16() else None
    if device.type != "cuda":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


class Autocast:
    """The autocast of one recipe on one device; calling it opens the context for a forward pass."""

    def __init__(self, device: torch.device, amp: str):
        self.dtype = resolve_amp(amp, device)
        self.enabled = self.dtype is not None
        self.device_type = device.type

    def __call__(self):
        """The autocast context (a no-op where the recipe runs in fp32 here)."""
        autocast = torch.autocast(self.device_type, dtype=self.dtype or torch.float32, enabled=self.enabled)
        if not (self.enabled and self.device_type == "cpu"):
            return autocast
        return _cpu_bf16_context(autocast)


@contextlib.contextmanager
def _cpu_bf16_context(autocast):
    """bf16 autocast on the CPU with attention on the math path: torch's CPU flash attention is slow in
    bf16 (a toy CLIP pretraining step on one thread: fp32 821 ms, bf16 742 ms with flash attention, 530 ms on the
    math path; ``benchmarks/toy_precision.py``)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with autocast, sdpa_kernel([SDPBackend.MATH]):
        yield
