"""Sampler (scheduler) names as artists know them from A1111, mapped to diffusers schedulers."""

from __future__ import annotations

import inspect
from typing import Any

# name -> (diffusers class name, config overrides)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
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

# A sampler's noise schedule (A1111 >= 1.9's "Schedule type"), as diffusers options:
# name -> config overrides. "ays" (Align Your Steps) sets the family's tuned timesteps.
SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
SCHEDULES: dict[str, dict[str, Any]] = {
    "default": {},  # the sampler's own
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "beta": {"use_beta_sigmas": True},
    "trailing": {"timestep_spacing": "trailing"},  # A1111's sgm_uniform and simple
    "leading": {"timestep_spacing": "leading", "steps_offset": 1},  # A1111's ddim
    "ays": {},
}
DEFAULT_SCHEDULE = "default"
# Fast mode always samples with LCM; it is not offered in the normal list.
USER_SCHEDULERS = tuple(n for n in SCHEDULERS if n != "LCM")


def _class(name: str) -> Any:
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    return getattr(diffusers, SCHEDULERS[name][0])


def schedule_refusal(name: str, schedule: str) -> str | None:
    """Why sampler `name` cannot sample with `schedule` (None: it can). Whether a family
    has Align Your Steps timesteps is the caller's check (`common.new_scheduler`)."""
    if schedule not in SCHEDULES:
        return f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}"
    cls = _class(name)
    accepts = inspect.signature(cls.__init__).parameters
    if schedule == "ays" and "timesteps" not in inspect.signature(cls.set_timesteps).parameters:
        able = [n for n in USER_SCHEDULERS if "timesteps" in
                inspect.signature(_class(n).set_timesteps).parameters]
        return f"sampler {name} cannot take the Align Your Steps schedule; use {', '.join(able)}"
    missing = [k for k in SCHEDULES[schedule] if k not in accepts]
    if missing:
        able = [n for n in USER_SCHEDULERS if all(
            k in inspect.signature(_class(n).__init__).parameters for k in SCHEDULES[schedule])]
        return f"sampler {name} has no {schedule} schedule; use {', '.join(able)}"
    return None


def ays_timesteps(key: str, steps: int, alphas_cumprod: Any) -> list[int]:
    """Align Your Steps' timesteps for `steps` steps: diffusers' tuned 10-step list,
    interpolated in log-sigma space (the scheduler's `alphas_cumprod`) for other counts, as
    A1111 does."""
    import numpy as np
    from diffusers.schedulers import AysSchedules

    ac = np.asarray(alphas_cumprod, dtype=np.float64)
    train = np.arange(len(ac))
    base = np.clip(np.asarray(AysSchedules[key], dtype=np.float64), 0, len(ac) - 1)
    if steps == len(base):
        return [int(t) for t in base]
    log_sigmas = np.log(((1 - ac) / ac) ** 0.5)  # increasing with the timestep
    wanted = np.interp(np.linspace(0, 1, steps), np.linspace(0, 1, len(base)),
                       np.interp(base, train, log_sigmas))
    out = [int(round(float(np.interp(w, log_sigmas, train)))) for w in wanted]
    for i in range(1, len(out)):  # strictly decreasing, as the samplers require
        out[i] = min(out[i], out[i - 1] - 1)
    return [max(t, 0) for t in out]


def make_scheduler(name: str, base_config: dict[str, Any], schedule: str = DEFAULT_SCHEDULE,
                   ays: str | None = None) -> Any:
    """A fresh scheduler (schedulers hold per-run state, so never share one between calls)
    sampling with `schedule` (see SCHEDULES; `ays` is the family's AYS key)."""
    why = schedule_refusal(name, schedule) or (
        "the Align Your Steps schedule needs the family's timesteps" if schedule == "ays"
        and ays is None else None)
    if why:
        raise ValueError(why)
    cls = _class(name)
    config = {k: v for k, v in dict(base_config).items() if not k.startswith("_")}
    config.update(SCHEDULERS[name][1])
    if any(k in SIGMA_FLAGS for k in SCHEDULES[schedule]):
        config.update(dict.fromkeys(SIGMA_FLAGS, False))  # one sigma schedule at a time
    config.update(SCHEDULES[schedule])
    if schedule == "ays":
        config.update(dict.fromkeys(SIGMA_FLAGS, False))
        cls = _ays_class(cls)
        scheduler = cls.from_config(config)
        scheduler.ays_key = ays
        return scheduler
    return cls.from_config(config)


def _ays_class(cls: type) -> type:
    """`cls` whose `set_timesteps(n)` sets Align Your Steps' timesteps for n steps (every
    pipeline, img2img's strength included, then samples them as it would its own)."""

    def set_timesteps(self: Any, num_inference_steps: int | None = None,
                      device: Any = None, **kwargs: Any) -> None:
        if kwargs.get("timesteps") is None and num_inference_steps is not None:
            kwargs["timesteps"] = ays_timesteps(self.ays_key, int(num_inference_steps),
                                                 self.alphas_cumprod)
        cls.set_timesteps(self, device=device, **kwargs)

    return _AYS.setdefault(cls, type(f"AlignYourSteps{cls.__name__}", (cls,),
                                     {"set_timesteps": set_timesteps}))


_AYS: dict[type, type] = {}
