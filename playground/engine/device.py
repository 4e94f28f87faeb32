"""The one place that decides device and precision: CUDA bf16, MPS, or CPU fp32 with bf16 autocast where native."""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    weight_dtype: torch.dtype  # dtype the weights are stored in
    autocast_dtype: torch.dtype | None  # autocast for training forward/backward, None for none

    def describe(self) -> str:
        name = str(self.device)
        if self.device.type == "cuda":
            name = f"cuda ({torch.cuda.get_device_name(self.device)})"
        weights = str(self.weight_dtype).replace("torch.", "")
        auto = str(self.autocast_dtype).replace("torch.", "") if self.autocast_dtype else "off"
        return f"{name}, weights {weights}, training autocast {auto}"

    def autocast(self, enabled: bool = True):
        """Context manager for forward/backward under this choice's autocast (a no-op when there is none)."""
        if not enabled or self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX512-BF16 or AMX), where bf16 autocast is faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_device(prefer: str | None = None) -> DeviceChoice:
    """The one place that decides device and precision.

    CUDA -> bf16 weights (fp16 where bf16 is unsupported); MPS -> fp32 weights with fp16 autocast; CPU -> fp32
    weights with bf16 autocast for training where the CPU has native bf16 (about 1.9x faster per LoRA step here).
    ``prefer`` (or ``PLAYGROUND_DEVICE``) forces "cpu", "cuda" or "mps"; ``PLAYGROUND_AUTOCAST=0`` turns autocast off.
    """
    prefer = (prefer or os.environ.get("PLAYGROUND_DEVICE") or "").lower() or None
    autocast_allowed = os.environ.get("PLAYGROUND_AUTOCAST", "1") != "0"
    if prefer in (None, "cuda") and torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return DeviceChoice(torch.device("cuda"), dtype, dtype if autocast_allowed else None)
    if prefer in (None, "mps") and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return DeviceChoice(torch.device("mps"), torch.float32, torch.float16 if autocast_allowed else None)
    auto = torch.bfloat16 if (autocast_allowed and cpu_supports_bf16()) else None
    return DeviceChoice(torch.device("cpu"), torch.float32, auto)
