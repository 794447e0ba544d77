"""Text-to-image tab."""

from __future__ import annotations

from typing import Any

import gradio as gr

from .common import (
    common_params,
    gpu_kwargs,
    info_json,
    progress_adapter,
    result_outputs,
    session_of,
    spaces_gpu,
    stop_handler,
    user_errors,
)
from .common import (
    whole_number as _num,
)


def build(studio: Any, gallery_hook: Any) -> dict[str, Any]:
    """Build the tab inside the current Blocks context; returns its parameter widgets."""
    with gr.Row():
        with gr.Column(scale=1):
            params = common_params(
                size=studio.native_size, prompt_placeholder="a red circle and a blue square",
                elem_prefix="txt2img",
            )
            with gr.Row():
                run = gr.Button("Generate", variant="primary", elem_id="txt2img-generate")
                stop = gr.Button("Stop")
        with gr.Column(scale=1):
            image, info = result_outputs("txt2img")

    @spaces_gpu
    @user_errors
    def txt2img(
        prompt: str, negative_prompt: str, seed: float, steps: float, guidance_scale: float,
        width: float, height: float, scheduler: str, fast: bool,
        request: gr.Request = None, progress: gr.Progress = gr.Progress(track_tqdm=True),
    ) -> tuple[str, str]:
        """Generate an image from a prompt. Returns [image, info JSON with seed and file]."""
        session = session_of(request)
        result = studio.txt2img(
            {
                "prompt": prompt, "negative_prompt": negative_prompt or "",
                "seed": _num(seed), "steps": _num(steps), "guidance_scale": _num(guidance_scale),
                "width": _num(width), "height": _num(height), "scheduler": scheduler,
                "fast": bool(fast),
            },
            progress=progress_adapter(progress), cancel=studio.cancel_token(session),
        )
        return str(result.path), info_json(result.info)

    event = run.click(txt2img, inputs=list(params.values()), outputs=[image, info],
                      api_name="txt2img", **gpu_kwargs())
    gallery_hook(event, image)
    stop.click(stop_handler(studio), None, None,
               api_visibility="private", queue=False)
    return params
