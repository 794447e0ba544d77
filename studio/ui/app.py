"""Assemble the studio's Blocks: banner, one tab per task, session gallery, PNG info, queue."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import gradio as gr

from .common import session_of

# (tab title, module in studio.ui, tab id). Each module has build(studio, gallery_hook).
TABS = (
    ("Text to image", "txt2img"),
    ("Control", "control"),
    ("Layout", "layout"),
    ("Edit", "edit"),
    ("Instruct", "instruct"),
    ("Concepts", "concepts"),
)

TITLE = "Controllable Studio"
DESCRIPTION = (
    "Steer Stable Diffusion with a prompt, a sketch, a pose, a depth map, boxes, a mask, an "
    "instruction or a few pictures of a concept. Every tab is also a named API endpoint."
)


def build_app(studio: Any, queue_size: int = 64) -> gr.Blocks:
    """Build the whole UI around one shared backend `studio`."""
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\n{DESCRIPTION}")
        if studio.banner:
            gr.Markdown(f"> **{studio.banner}**", elem_id="offline-banner")
        results = gr.State([])
        gallery = gr.Gallery(
            label="This session's results", columns=8, height=200, fit_columns=False,
            object_fit="contain", preview=False, render=False, elem_id="session-gallery",
        )

        def add_to_gallery(history: list[str], path: str | None) -> tuple[list[str], list[str]]:
            history = ([path] if path else []) + list(history)
            return history, history

        def gallery_hook(event: Any, image: gr.Image) -> None:
            """After a generation, add its image to this session's gallery (UI only)."""
            event.then(add_to_gallery, [results, image], [results, gallery],
                       api_visibility="private")

        with gr.Tabs():
            for title, name in TABS:
                if importlib.util.find_spec(f"studio.ui.{name}") is None:
                    continue  # tab not part of this build
                module = importlib.import_module(f"studio.ui.{name}")
                with gr.Tab(title, id=name):
                    module.build(studio, gallery_hook)
            with gr.Tab("PNG info", id="pnginfo"):
                with gr.Row():
                    dropped = gr.Image(label="Drop a generated image", type="filepath")
                    params = gr.Textbox(label="Parameters", lines=16)
                dropped.change(studio.png_info, dropped, params, api_visibility="private")
        gallery.render()

        def cancel(request: gr.Request) -> bool:
            """Stop this session's running generation at its next step (frees the worker)."""
            return studio.cancel(session_of(request))

        # Not queued: it must run while the GPU queue is busy with the run it stops.
        gr.api(cancel, api_name="cancel", queue=False)
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    return demo
