"""Hires fix: a second pass that enlarges a first image and refines it (A1111's "Hires. fix").

The first pass makes the image at the request's size; the upscaler enlarges it by
`hires_scale` (1 = off): `latent` interpolates the first pass's latents (the pipeline hands
them over undecoded), `lanczos`/`none` resize the decoded image, a model name runs that
upscaler model. Then an img2img pass of the family's pipeline at `hires_denoise` refines it
at the new size, with `hires_steps` (0 = the first pass's) and `hires_prompt` (empty = the
same prompt). Text to image and Layout refine with the plain img2img pipeline (Layout without
its boxes); Control keeps its units (ControlNet img2img, the maps resized to the new size).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from PIL import Image

from ..common import (
    CancelToken,
    ProgressFn,
    TaskContext,
    configure_pipe,
    cpu_generator,
    effective_steps_guidance,
    run_guarded,
    step_callback,
    step_kwargs,
    text_options,
)
from ..models.registry import ModelRegistry
from ..requests import LATENT


# ---------------------------------------------------------------------- upscaling
def upscale_latents(latents: torch.Tensor, first: tuple[int, int], size: tuple[int, int]
                    ) -> torch.Tensor:
    """A1111's "Latent" upscaler: the latents of an image of size `first` interpolated
    (bilinear) to those of an image of `size`."""
    (w, h), (tw, th) = first, size
    if latents.ndim == 3:  # one image of a pipeline's output
        latents = latents[None]
    lh, lw = latents.shape[-2:]
    return torch.nn.functional.interpolate(latents, size=(lh * th // h, lw * tw // w),
                                           mode="bilinear", align_corners=False)


def enlarge(ctx: TaskContext, first: Any, req: Any, cancel: CancelToken | None) -> Any:
    """The second pass's starting point: latents interpolated, or the decoded image enlarged
    by the request's upscaler."""
    size = req.hires_target()
    if req.hires_upscaler == LATENT:
        return upscale_latents(first, (req.width, req.height), size)
    return ctx.upscalers.upscale(first, req.hires_upscaler, size, cancel)


def second_request(req: Any) -> Any:
    """A copy of `req` as the second pass runs it: the final size, its steps and prompt."""
    second = copy.copy(req)
    second.width, second.height = req.hires_target()
    second.steps = req.hires_steps or req.steps
    second.prompt = req.hires_prompt or req.prompt
    return second


def offset_progress(progress: ProgressFn | None, done: int, more: int) -> ProgressFn | None:
    """Report the second pass's steps after the first's `done`, of `done + more` in all."""
    if progress is None:
        return None
    return lambda step, total: progress(done + step, done + total)


def run_img2img(registry: ModelRegistry, req: Any, init: Any, progress: ProgressFn | None,
                cancel: CancelToken | None) -> Image.Image:
    """The plain second pass: the family's img2img pipeline on the shared base components,
    from `init` (an image, or latents) at `req.hires_denoise`."""
    pipe = registry.family.pipeline(registry, "img2img", "unet")
    second = second_request(req)
    configure_pipe(registry, pipe, second, "unet")
    steps, guidance = effective_steps_guidance(second)
    callback = step_callback(req.second_steps_run(), progress, cancel)

    def call() -> Any:
        return pipe(
            prompt=second.prompt, negative_prompt=req.negative_prompt or None,
            **text_options(pipe, second), image=init, strength=req.hires_denoise,
            num_inference_steps=steps, guidance_scale=guidance,
            generator=cpu_generator(req.seed), **step_kwargs(pipe, callback))

    return run_guarded(registry, call, cancel).images[0]


def refine(ctx: TaskContext, req: Any, first: Any, first_steps: int,
           progress: ProgressFn | None, cancel: CancelToken | None,
           second_pass: Any = None) -> tuple[Image.Image, dict[str, Any]]:
    """Enlarge the first pass's result and refine it (`second_pass(req, init, progress)`, or
    the plain img2img pass); returns the final image and the hires info."""
    first_size = (req.width, req.height)
    init = enlarge(ctx, first, req, cancel)
    more = req.second_steps_run()
    report = offset_progress(progress, first_steps, more)
    if second_pass is None:
        image = run_img2img(ctx.registry, req, init, report, cancel)
    else:
        image = second_pass(req, init, report)
    info = req.hires_info(first_size)
    info["hires"]["steps_run"] = more
    return image, info
