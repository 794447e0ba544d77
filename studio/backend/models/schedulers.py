"""Sampler (scheduler) names as artists know them from A1111, mapped to diffusers schedulers."""

from __future__ import annotations

from typing import Any

# name -> (diffusers class name, config overrides)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ SDE Karras": (
        "DPMSolverMultistepScheduler",
        {"use_karras_sigmas": True, "algorithm_type": "sde-dpmsolver++"},
    ),
    "DDIM": ("DDIMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "PNDM": ("PNDMScheduler", {}),
    "LCM": ("LCMScheduler", {}),
}
DEFAULT_SCHEDULER = "Euler a"
# Fast mode always samples with LCM; it is not offered in the normal list.
USER_SCHEDULERS = tuple(n for n in SCHEDULERS if n != "LCM")


def make_scheduler(name: str, base_config: dict[str, Any]) -> Any:
    """A fresh scheduler (schedulers hold per-run state, so never share one between calls)."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    cls_name, overrides = SCHEDULERS[name]
    cls = getattr(diffusers, cls_name)
    config = {k: v for k, v in dict(base_config).items() if not k.startswith("_")}
    config.update(overrides)
    return cls.from_config(config)
