"""Upscale tab: enlarge an image with an upscaler model (or Lanczos), no diffusion."""

from __future__ import annotations

from typing import Any

import gradio as gr

from .common import GenerationTab, labelled_input_errors
from .sendto import register_target


def build(studio: Any, gallery_hook: Any) -> None:
    """Build the tab inside the current Blocks context."""
    tab = GenerationTab(studio, "upscale", gallery_hook, prefix="upscale")
    names = studio.upscaler_names(latent=False)
    models = [n for n in names if n not in ("lanczos", "none")]
    with gr.Row():
        with gr.Column(scale=1):
            w = {
                "image": gr.Image(label="Image", type="filepath", elem_id="upscale-image"),
                "scale": gr.Slider(1, 8, value=2, step=0.25, label="Upscale by",
                                   elem_id="upscale-scale"),
                "upscaler": gr.Dropdown(
                    names, value=models[0] if models else "lanczos", label="Upscaler",
                    allow_custom_value=True, elem_id="upscale-upscaler",
                    info="models from --upscalers-dir (and the built-in set's); lanczos: "
                         "a filter; none: pixels repeated"),
            }
            run, _ = tab.buttons(label="Upscale", elem="run")
        with gr.Column(scale=1):
            tab.results()
    for widget in w.values():
        labelled_input_errors(widget)
    register_target("Upscale", "upscale", [w["image"]], lambda path: [path])
    tab.wire(run.click, w, api_name="upscale", optional=("scale", "upscaler"),
             progress_desc="upscaling",
             doc="Enlarge an image by `scale` with `upscaler` (an upscaler model's name, "
                 "lanczos or none). Returns [image, info JSON with file and sizes].")
