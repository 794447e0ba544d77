"""Text-to-image tab."""

from __future__ import annotations

from typing import Any

import gradio as gr

from .common import GenerationTab


def build(studio: Any, gallery_hook: Any) -> dict[str, Any]:
    """Build the tab inside the current Blocks context; returns its parameter widgets."""
    tab = GenerationTab(studio, "txt2img", gallery_hook, prefix="txt2img")
    with gr.Row():
        with gr.Column(scale=1):
            params = tab.params(prompt_placeholder="a red circle and a blue square")
            run, _ = tab.buttons()
        with gr.Column(scale=1):
            tab.results()
    tab.wire(run.click, params, api_name="txt2img",
             doc="Generate an image from a prompt. Returns [image, info JSON with seed and "
                 "file].")
    return params
