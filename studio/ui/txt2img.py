"""Text-to-image tab, with Attend-and-Excite and an "Edit the prompt" panel
(prompt-to-prompt: the source and the edit side by side)."""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from studio.backend.tasks.prompt_edit import MODES

from .common import PRIVATE, GenerationTab, hires_params, labelled_input_errors, user_errors
from .sendto import register_target, stored_values

MODE_CHOICES = [("Swap words (same length)", "replace"), ("Add or remove words", "refine"),
                ("Weigh words", "reweight")]


def source_file(studio: Any, info: str | None) -> str | None:
    """The saved source image of a prompt edit, from its info JSON (inside the outputs)."""
    try:
        name = json.loads(info or "{}").get("source")
    except json.JSONDecodeError:
        return None
    return str(studio.outputs.resolve_stored(name, "source")) if name else None


def build(studio: Any, gallery_hook: Any) -> dict[str, Any]:
    """Build the tab inside the current Blocks context; returns its parameter widgets."""
    tab = GenerationTab(studio, "txt2img", gallery_hook, prefix="txt2img")
    with gr.Row():
        with gr.Column(scale=1):
            params = tab.params(prompt_placeholder="a red circle and a blue square")
            with gr.Accordion("Attend-and-Excite (every subject drawn)", open=False):
                excite = {
                    "attend_excite": gr.Checkbox(
                        label="Attend-and-Excite", value=False, elem_id="txt2img-attend_excite",
                        info="Nudges the image while it forms so that no subject of the "
                             "prompt is left out. Slower (about 2-4x)."),
                    "excite_words": gr.Textbox(
                        label="Subjects (comma-separated; empty = the nouns of the prompt)",
                        elem_id="txt2img-excite_words"),
                }
            hires = hires_params(studio, "txt2img")
            run, _ = tab.buttons()
        with gr.Column(scale=1):
            tab.results()
    for widget in excite.values():
        labelled_input_errors(widget)
    tab.wire(run.click, {**params, **excite}, api_name="txt2img",
             optional=tuple(excite), trailing=hires,
             doc="Generate an image from a prompt (optionally with Attend-and-Excite, and "
                 "hires fix: hires_scale > 1). Returns [image, info JSON with seed and file].")
    _prompt_edit_panel(studio, gallery_hook, params)
    fields = {**params, **excite, **hires}  # a sent image's stored request fills these
    register_target("Text to image", "txt2img", list(fields.values()),
                    lambda path: stored_values(studio, path, list(fields)))
    return fields


def _prompt_edit_panel(studio: Any, gallery_hook: Any, params: dict[str, Any]) -> None:
    """Prompt-to-prompt: the prompt above is the source; the edit shares its settings."""
    edit = GenerationTab(studio, "prompt_edit", gallery_hook, prefix="p2p")
    with gr.Accordion("Edit the prompt (prompt-to-prompt: keep the picture, change a word)",
                      open=False):
        w: dict[str, Any] = {}
        with gr.Row():
            w["edited_prompt"] = gr.Textbox(label="Edited prompt", elem_id="p2p-edited_prompt",
                                            placeholder="a red circle and a green square")
            w["mode"] = gr.Dropdown(MODE_CHOICES, value=MODES[0], label="Edit",
                                    elem_id="p2p-mode")
        with gr.Row():
            w["reweight"] = gr.Textbox(label='Weights (Weigh words), e.g. {"red": 2}',
                                       elem_id="p2p-reweight")
            w["cross_replace"] = gr.Slider(
                0, 1, value=0.8, step=0.05,
                label="Keep word attention (cross_replace, share of the steps)")
            w["self_replace"] = gr.Slider(
                0, 1, value=0.4, step=0.05,
                label="Keep layout attention (self_replace, share of the steps)")
            w["local_blend"] = gr.Textbox(label="Change only around (words, optional)",
                                          elem_id="p2p-local_blend")
        run, _ = edit.buttons(label="Edit", elem="run")
        with gr.Row():
            source = gr.Image(label="Source", type="filepath", interactive=False,
                              elem_id="p2p-source")
            with gr.Column():
                edit.results()
    for widget in w.values():
        labelled_input_errors(widget)
    event = edit.wire(run.click, {**params, **w}, api_name="prompt_edit",
                      optional=("reweight", "cross_replace", "self_replace", "local_blend"),
                      doc="Prompt-to-prompt: render prompt and edited_prompt from the same "
                          "noise, the edit keeping the source's attention. Returns [edited "
                          "image, info JSON with source (the source image's file)].")
    event.then(user_errors(lambda info: source_file(studio, info)), edit.info, source,
               **PRIVATE)
