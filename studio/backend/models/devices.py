"""Pick the compute device and dtype once: CUDA fp16, MPS fp16, CPU fp32 (overridable)."""

from __future__ import annotations

import torch

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(name: str = "auto") -> torch.device:
    """Resolve "auto" to the best available device; an explicit one must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is visible")
    mps = getattr(torch.backends, "mps", None)
    if name == "mps" and not (mps and mps.is_available()):
        raise ValueError("--device mps was asked for but MPS is not available")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """fp16 on accelerators, fp32 on CPU (fp16 convolutions are slow or missing on CPU)."""
    if name == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    return _DTYPES[name]
