"""Text to image with the shared base pipeline."""

from __future__ import annotations

from typing import Any

from ..common import (
    CancelToken,
    ProgressFn,
    TaskContext,
    base_pipeline,
    configure_pipe,
    cpu_generator,
    effective_steps_guidance,
    run_guarded,
    step_callback,
    text_options,
)
from ..models.registry import ModelRegistry
from ..requests import Txt2ImgRequest
from ..steering.excite import excitation_for, excited
from .hires import refine


def run_txt2img(
    registry: ModelRegistry,
    req: Txt2ImgRequest,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    adapters: dict[str, float] | None = None,
    latents: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Generate one image; returns (PIL image, info). `req` must be validated with a seed.
    With `latents`, the first element is the undecoded latents (hires fix's `latent`)."""
    pipe = base_pipeline(registry)
    configure_pipe(registry, pipe, req, "unet", adapters)
    steps, guidance = effective_steps_guidance(req)
    callback = step_callback(steps, progress, cancel)
    info: dict[str, Any] = {"steps_run": steps, "guidance_run": guidance}
    excitation = excitation_for(pipe, req, steps, info)
    if excitation is not None:
        report = callback

        def callback(pipeline: Any, step: int, timestep: Any, kwargs: dict) -> dict:
            kwargs["latents"] = excitation.after_step(step, kwargs["latents"])
            return report(pipeline, step, timestep, kwargs)

    def call() -> Any:
        return pipe(
            prompt=req.prompt,
            negative_prompt=req.negative_prompt or None,
            **text_options(pipe, req),
            num_inference_steps=steps,
            guidance_scale=guidance,
            width=req.width,
            height=req.height,
            generator=cpu_generator(req.seed),
            callback_on_step_end=callback,
            **({"output_type": "latent"} if latents else {}),
        )

    with excited(excitation):
        out = run_guarded(registry, call, cancel)
    if excitation is not None:
        info.update(excitation.info())
    return out.images[0], info


def txt2img_runner(ctx: TaskContext, req: Txt2ImgRequest, progress: ProgressFn | None,
                   cancel: CancelToken | None) -> tuple[Any, dict[str, Any]]:
    """Studio task runner for txt2img: the image, then hires fix's second pass if asked."""
    first, info = run_txt2img(ctx.registry, req, progress, cancel,
                              latents=req.latent_upscale)
    if not req.hires:
        return first, info
    image, hires = refine(ctx, req, first, info["steps_run"], progress, cancel)
    info.update(hires)
    return image, info
