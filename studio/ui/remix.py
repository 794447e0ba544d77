"""Remix tab: variations of a picture, blends of 2-4 pictures (with an interpolation strip),
and text diffs ("a photo of a cat" -> "an anime drawing of a cat"), drawn by IP-Adapter.

API: `/remix` (one image). The strip is this tab's own button: N remixes from picture 1 to
picture 2 with one seed, each saved like any output.
"""

from __future__ import annotations

import random
from typing import Any

import gradio as gr

from studio.backend.common import Result
from studio.backend.requests import MAX_SEED, RequestError, check_number
from studio.backend.tasks.remix import MAX_REMIX_IMAGES

from .common import (
    PRIVATE,
    GenerationTab,
    file_paths,
    labelled_input_errors,
    path_and_info,
    user_errors,
)
from .concepts import with_files
from .sendto import added_file, register_target

MAX_STRIP = 9
INTRO = (
    "Upload **one picture** for variations (same content and style, new images), **two to "
    "four** to blend them (weights, e.g. `[0.7, 0.3]`), and write two captions to move the "
    "picture from one to the other (a *text diff*: `a photo of a cat` -> `an anime drawing "
    "of a cat`). The prompt is optional.")


def strip_requests(data: dict[str, Any], count: Any) -> list[dict[str, Any]]:
    """The remix requests of an interpolation strip: `count` images from picture 1 to
    picture 2 (weights [1 - t, t]) with one seed (a random one, drawn once, for -1)."""
    images = data.get("images") or []
    if len(images) < 2:
        raise RequestError("the interpolation strip blends picture 1 into picture 2: upload "
                           f"at least two pictures ({len(images)} given)")
    check_number("strip length", count, 2, MAX_STRIP, integer=True)
    seed = data.get("seed")
    if seed is None or seed == -1:
        seed = random.randint(0, MAX_SEED)
    count = int(count)
    return [{**data, "images": list(images[:2]), "seed": seed,
             "weights": [1 - i / (count - 1), i / (count - 1)]} for i in range(count)]


def strip_files(studio: Any, result: Result) -> list[str]:
    """The strip's images as files (in the outputs folder)."""
    return [str(studio.outputs.folder / name) for name in result.info.get("strip", [])]


def run_strip(studio: Any, data: dict[str, Any], progress: Any, cancel: Any,
              preview: Any) -> Result:
    """Render the strip's remixes in order; the last result carries every file's name."""
    requests = strip_requests(data, data.pop("strip_count", 5))
    results = [studio.run("remix", req, progress, cancel, preview) for req in requests]
    last = results[-1]
    last.info = {**last.info, "strip": [r.info["file"] for r in results]}
    return last


def build(studio: Any, gallery_hook: Any) -> dict[str, Any]:
    """Build the tab inside the current Blocks context; returns its parameter widgets."""
    tab = GenerationTab(studio, "remix", gallery_hook, prefix="remix")
    gr.Markdown(INTRO)
    w: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(scale=1):
            w["images"] = gr.File(label="1-4 pictures", file_count="multiple",
                                  file_types=["image"], value=None, elem_id="remix-images")
            thumbs = gr.Gallery(label="Pictures, in order", columns=4, height=120,
                                interactive=False, elem_id="remix-thumbs")
            with gr.Row():
                w["weights"] = gr.Textbox(label="Weights (JSON list; empty = equal)",
                                          placeholder="[0.5, 0.5]", value="",
                                          elem_id="remix-weights")
                w["image_scale"] = gr.Slider(0, 1.5, value=1.0, step=0.05,
                                             label="Image strength (image_scale)")
            with gr.Accordion("Text diff (move the picture from one caption to another)",
                              open=False):
                with gr.Row():
                    w["text_from"] = gr.Textbox(label="From", placeholder="a photo of a cat",
                                                value="",
                                                elem_id="remix-text_from")
                    w["text_to"] = gr.Textbox(label="To",
                                              placeholder="an anime drawing of a cat",
                                              value="",
                                              elem_id="remix-text_to")
                w["text_amount"] = gr.Slider(0, 1, value=0.5, step=0.05, label="Amount")
            params = tab.params(prompt_placeholder="optional: what else to draw", prompt_value="")
            run, _ = tab.buttons()
            with gr.Accordion("Interpolation strip (picture 1 -> picture 2, one seed)",
                              open=False):
                count = gr.Slider(2, MAX_STRIP, value=5, step=1, label="Images in the strip",
                                  elem_id="remix-strip_count")
                make_strip = gr.Button("Make the strip", elem_id="remix-strip")
        with gr.Column(scale=1):
            tab.results()
            strip = gr.Gallery(label="Strip", columns=5, height=160, interactive=False,
                               elem_id="remix-strip-gallery")
    for widget in (*w.values(), count):
        labelled_input_errors(widget)
    w["images"].change(user_errors(file_paths), w["images"], thumbs, **PRIVATE)
    register_target("Remix", "remix", [w["images"]],
                    lambda path, current: [added_file(path, current, MAX_REMIX_IMAGES)],
                    inputs=[w["images"]])
    order = ("images", "weights", "text_from", "text_to", "text_amount", "image_scale")
    inputs = {**{k: w[k] for k in order}, **params}
    tab.wire(run.click, inputs, api_name="remix", to_request=with_files,
             doc="Remix pictures in CLIP image space with IP-Adapter: variations (1 image), "
                 "blends (2-4 with weights) and text diffs (text_from -> text_to). Returns "
                 "[image, info JSON].")
    tab.wire(make_strip.click, {**inputs, "strip_count": count}, to_request=with_files,
             run=lambda data, progress, cancel, preview: run_strip(studio, data, progress,
                                                                   cancel, preview),
             outputs=lambda r: (*path_and_info(r), strip_files(studio, r)),
             extra_outputs=[strip],
             doc="An interpolation strip from picture 1 to picture 2 (UI only).")
    return inputs
