"""What every generating task shares: scheduler, fast mode, seeds, progress, cancel, OOM."""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from .models.modelsets import ModelSet
from .models.registry import ModelRegistry, is_out_of_memory
from .outputs import OutputStore
from .previews import show as show_preview
from .previews import watch_scheduler
from .requests import FAST_STEPS, GenerationParams, RequestError

log = logging.getLogger(__name__)

FAST_GUIDANCE = 1.0
LCM_ADAPTER = "lcm"

ProgressFn = Callable[[int, int], None]


class TaskContext(Protocol):
    """What a task runner may use of the backend (the Studio is one): the shared models, the
    output store, the annotators, the concept library (both built on first use) and the
    upscalers."""

    registry: ModelRegistry
    outputs: OutputStore
    model_set: ModelSet

    @property
    def model_name(self) -> str: ...

    @property
    def annotators(self) -> Any: ...

    @property
    def concepts(self) -> Any: ...

    @property
    def upscalers(self) -> Any: ...


class StudioError(RuntimeError):
    """A failure the user should read (out of memory, cancelled, missing weights)."""


class Cancelled(StudioError):
    """The user stopped the run."""


@dataclass
class CancelToken:
    """Cooperative cancellation: the step callbacks check it and interrupt the work.

    A job stops when its session presses Stop (`cancel()`), or when it runs past its
    `deadline` (time.monotonic(); the server's per-job time budget).
    """

    event: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None
    budget_s: float | None = None  # the budget the deadline came from (for the message)
    running: bool = False  # set while its job holds the device

    def cancel(self) -> None:
        self.event.set()

    @property
    def timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    @property
    def cancelled(self) -> bool:
        return self.event.is_set() or self.timed_out

    def check(self, what: str = "the run") -> None:
        """Raise Cancelled (saying why) if the job must stop."""
        if self.event.is_set():
            raise Cancelled(f"Cancelled: {what} was stopped before it finished.")
        if self.timed_out:
            raise Cancelled(
                f"Stopped: {what} ran past this server's limit of {self.budget_s:g} s per job. "
                "Use fewer steps or a smaller size."
            )


@dataclass
class Result:
    """A finished generation: the image, a JSON-able info dict and the saved file."""

    image: Image.Image
    info: dict[str, Any]
    path: Path | None = None
    extra_images: list[Image.Image] = field(default_factory=list)


def base_pipeline(registry: ModelRegistry, unet_role: str = "unet") -> Any:
    """The family's text-to-image pipeline on the shared components (txt2img, and the view
    that concepts, SeedSelect and the GLIGEN adapters load into)."""
    return registry.family.pipeline(registry, "txt2img", unet_role)


def cpu_generator(seed: int) -> torch.Generator:
    """Seeds drive a CPU generator so a seed gives the same image on any device of one kind."""
    return torch.Generator("cpu").manual_seed(int(seed))


def effective_steps_guidance(req: GenerationParams) -> tuple[int, float]:
    """Fast mode (LCM-LoRA) samples in a few steps with little or no guidance."""
    if req.fast:
        return min(req.steps, FAST_STEPS), FAST_GUIDANCE
    return req.steps, req.guidance_scale


def configure_pipe(
    registry: ModelRegistry,
    pipe: Any,
    req: GenerationParams,
    unet_role: str = "unet",
    adapters: dict[str, float] | None = None,
) -> None:
    """Fresh scheduler for this call and the right LoRA adapters (LCM in fast mode) active."""
    pipe.scheduler = new_scheduler(registry, req)
    watch_scheduler(pipe.scheduler)  # live previews show the sampler's predicted image
    registry.begin_call()
    active = dict(adapters or {})
    # Hooks (e.g. the concept library) load what the prompt mentions into the shared
    # models once and return the LoRA adapters to activate for this call.
    for hook in registry.hooks:
        active.update(hook(pipe, req, unet_role) or {})
    if req.fast:
        if not registry.model_set.get("lcm_lora"):
            raise RequestError(
                f"Fast mode needs an LCM-LoRA and the {registry.model_set.name} models have "
                "none: untick Fast mode (or set fast=false)."
            )
        registry.ensure_lora(unet_role, LCM_ADAPTER, registry.model_set.get("lcm_lora"), pipe)
        active[LCM_ADAPTER] = 1.0
    loaded = registry.loras(unet_role)
    if not loaded:
        return
    names = [n for n in active if n in loaded]
    if not names:
        pipe.disable_lora()
        return
    pipe.enable_lora()
    pipe.set_adapters(names, [active[n] for n in names])


def new_scheduler(registry: ModelRegistry, req: GenerationParams) -> Any:
    """A fresh sampler for this call, with the request's noise schedule."""
    if req.schedule == "ays" and registry.family.defaults.ays is None:
        raise RequestError(f"schedule 'ays': Align Your Steps has no timesteps for "
                           f"{registry.family.label} models; use another schedule")
    return registry.new_scheduler(req.sampler_name, req.schedule)


def text_options(pipe: Any, req: GenerationParams) -> dict[str, Any]:
    """The pipeline call's prompt-encoding options: clip skip (A1111's 2 is diffusers'
    `clip_skip=1`: the hidden states one layer before the last), refused by name where the
    pipeline cannot honour it."""
    if req.clip_skip <= 1:
        return {}
    if "clip_skip" not in inspect.signature(pipe.__call__).parameters:
        raise RequestError(f"clip skip {req.clip_skip}: the {req.task} pipeline encodes "
                           "prompts with the last layer only; use clip skip 1")
    encoder = pipe.text_encoder
    layers = encoder.config.num_hidden_layers
    if req.clip_skip > layers:
        raise RequestError(f"clip skip {req.clip_skip}: this model's text encoder has "
                           f"{layers} layers; use at most {layers}")
    if not hasattr(encoder, "text_model") and hasattr(encoder, "final_layer_norm"):
        # transformers 5 folded CLIPTextModel's `text_model` into the model itself, and
        # diffusers' clip-skip path still reaches `text_encoder.text_model.final_layer_norm`:
        # name the model as its own text_model (a plain attribute, so it is no submodule and
        # its state dict keeps its keys)
        object.__setattr__(encoder, "text_model", encoder)
    return {"clip_skip": req.clip_skip - 1}


def step_callback(
    total: int, progress: ProgressFn | None, cancel: CancelToken | None
) -> Callable[..., dict]:
    """A diffusers `callback_on_step_end` that reports progress, shows a live preview when
    one is due, and honours cancel.

    Cancel raises at once: not every pipeline's loop checks diffusers' `_interrupt` flag
    (InstructPix2Pix's does not), and an exception stops all of them alike.
    """

    def _cb(pipe: Any, step: int, timestep: Any, kwargs: dict) -> dict:
        if progress is not None:
            progress(step + 1, total)
        show_preview(step + 1, total, kwargs.get("latents"))
        if cancel is not None:
            cancel.check()
        return kwargs

    return _cb


def step_kwargs(pipe: Any, callback: Callable[..., dict]) -> dict[str, Any]:
    """`callback_on_step_end=callback`, or, for a pipeline that only has diffusers' older
    per-step `callback(step, timestep, latents)` (SDXL's InstructPix2Pix), the same callback
    adapted to it."""
    if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:
        return {"callback_on_step_end": callback}

    def legacy(step: int, timestep: Any, latents: Any) -> None:
        callback(pipe, step, timestep, {"latents": latents})

    return {"callback": legacy, "callback_steps": 1}


def run_guarded(registry: ModelRegistry, fn: Callable[[], Any], cancel: CancelToken | None) -> Any:
    """Run a pipeline call, turning OOM into a clear message after freeing memory."""
    try:
        out = fn()
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        registry.free_memory()
        raise StudioError(
            "Out of memory while generating. Unused models were unloaded; try again, or use a "
            "smaller size, fewer control units, or a lower --memory-budget."
        ) from err
    if cancel is not None:
        cancel.check()
    return out
