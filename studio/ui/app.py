"""Assemble the studio's Blocks: banner, one tab per task, session gallery, PNG info, queue."""

from __future__ import annotations

from typing import Any

import gradio as gr

from . import concepts, control, edit, instruct, layout, pnginfo, txt2img
from .common import session_of

# (tab title, tab id, module). Each module has build(studio, gallery_hook).
TABS = (
    ("Text to image", "txt2img", txt2img),
    ("Control", "control", control),
    ("Layout", "layout", layout),
    ("Edit", "edit", edit),
    ("Instruct", "instruct", instruct),
    ("Concepts", "concepts", concepts),
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

        with gr.Tabs() as tabs:
            built: dict[str, Any] = {}
            for title, name, module in TABS:
                with gr.Tab(title, id=name):
                    built[name] = module.build(studio, gallery_hook)
            with gr.Tab("PNG info", id="pnginfo"):
                pnginfo.build(studio, gallery_hook, tabs, built["txt2img"])
        gallery.render()

        def cancel(request: gr.Request) -> bool:
            """Stop this session's running generation at its next step (frees the worker)."""
            return studio.cancel(session_of(request))

        # Not queued: it must run while the GPU queue is busy with the run it stops.
        gr.api(cancel, api_name="cancel", queue=False)
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    return demo
