"""Layout tab: draw boxes, label each with a phrase, and GLIGEN puts the objects in them.

The canvas (`gradio_image_annotation.image_annotator`) holds pixel boxes on a blank canvas of
the output size or on a reference image. Before each run a private step turns it into the API
inputs: `boxes` (normalised JSON, shown in the "as the API takes them" accordion) and `image`
(the reference, only in the inside-boxes mode); the `/layout` endpoint then takes exactly
those, so a script calling the API and the tab do the same thing.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
from gradio_image_annotation import image_annotator
from PIL import Image

from studio.backend.tasks.layout import (
    MAX_BOXES,
    boxes_from_pixels,
    boxes_to_pixels,
)

from .common import (
    PRIVATE,
    GenerationTab,
    gpu_kwargs,
    hires_params,
    labelled_input_errors,
    user_errors,
)
from .sendto import register_target

BLANK_COLOR = (250, 250, 250)
MODE_CHOICES = [("Generate", "generate"), ("Regenerate inside boxes", "inside_boxes")]
HINTS = {
    "generate": (
        f"Drag on the canvas to draw a box (up to {MAX_BOXES}), then type its phrase, e.g. "
        "*a red bird*. Click a box to edit or remove it. The blank canvas follows the output "
        "size; to draw over a reference image instead, clear the canvas (x) and upload one "
        "(boxes are relative, so it is only a guide; the output has the width and height set)."
    ),
    "inside_boxes": (
        "Clear the canvas (x), upload (or paste) the image and draw boxes where new objects "
        "should appear. Only the inside of the boxes is regenerated; every pixel outside them "
        "stays exactly as it is. The output has the image's size (width/height are not used)."
    ),
}


def blank_canvas(width: int, height: int) -> Image.Image:
    """A blank canvas with the output's aspect, at least 512 px on its long side.

    Boxes are stored relative to the canvas, so a small output (64 px) still gets a canvas
    large enough to draw on.
    """
    scale = max(1.0, 512 / max(int(width), int(height)))
    return Image.new("RGB", (round(int(width) * scale), round(int(height) * scale)), BLANK_COLOR)


def canvas_parts(value: dict[str, Any] | None) -> tuple[Image.Image, list[dict[str, Any]]]:
    """(image as displayed, pixel boxes) of an image_annotator value.

    The annotator rotates boxes with the image in the browser but sends the image unrotated
    with `orientation` (quarter turns clockwise), so the image is rotated to match the boxes.
    """
    image = (value or {}).get("image")
    if image is None:
        raise gr.Error("The layout canvas is empty: click 'Blank canvas' or upload an image.")
    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    turns = int((value or {}).get("orientation") or 0) % 4
    if turns:
        image = image.rotate(-90 * turns, expand=True)
    return image.convert("RGB"), list(value.get("boxes") or [])


def canvas_boxes_json(value: dict[str, Any] | None) -> str:
    """The canvas's boxes as the API's `boxes` JSON (normalised to the canvas size)."""
    image, pixel_boxes = canvas_parts(value)
    return json.dumps(boxes_from_pixels(pixel_boxes, *image.size))


def resized_blank(value: dict[str, Any] | None, width: float, height: float) -> dict[str, Any]:
    """A blank canvas of the output size carrying the current boxes (same relative places)."""
    canvas = blank_canvas(int(width), int(height))
    boxes: list[dict[str, Any]] = []
    if value and value.get("image") is not None:
        image, pixel_boxes = canvas_parts(value)
        normalised = boxes_from_pixels(pixel_boxes, *image.size)
        boxes = boxes_to_pixels(normalised, *canvas.size)
        for new, old in zip(boxes, pixel_boxes, strict=True):
            if old.get("color"):
                new["color"] = tuple(old["color"])
    return {"image": canvas, "boxes": boxes}


def canvas_inputs(value: dict[str, Any] | None, mode: str) -> tuple[str, Any]:
    """The canvas as the API inputs `boxes` (JSON) and `image` (only to regenerate inside)."""
    picture, pixel_boxes = canvas_parts(value)
    boxes_json = json.dumps(boxes_from_pixels(pixel_boxes, *picture.size))
    return boxes_json, (picture if mode == "inside_boxes" else None)


def boxes_preview(value: dict[str, Any] | None) -> str:
    """The live JSON view of the canvas's boxes ("[]" while the canvas is empty)."""
    try:
        return canvas_boxes_json(value)
    except gr.Error:
        return "[]"


def with_found_boxes(studio: Any, value: dict[str, Any] | None, text: str,
                     threshold: float) -> dict[str, Any]:
    """The canvas with a box added for each thing `text` names in its image (found by the
    detector; labelled with what was found, for the user to retype), up to MAX_BOXES."""
    picture, pixel_boxes = canvas_parts(value)
    room = MAX_BOXES - len(pixel_boxes)
    if room <= 0:
        raise gr.Error(f"The canvas already has {MAX_BOXES} boxes, the most a layout takes.")
    found = studio.layout_boxes(picture, text, threshold, limit=room)
    return {**value, "boxes": pixel_boxes + boxes_to_pixels(found, *picture.size)}


def without_boxes(value: dict[str, Any] | None) -> Any:
    """The canvas with its boxes deleted (nothing to do without an image)."""
    if not value or value.get("image") is None:
        return gr.skip()
    return {**value, "boxes": []}


def build(studio: Any, gallery_hook: Any) -> None:
    """Build the tab inside the current Blocks context."""
    tab = GenerationTab(studio, "layout", gallery_hook, prefix="layout")
    with gr.Row():
        with gr.Column(scale=1):
            params = tab.params(prompt_placeholder="a park in autumn, a bench and a bird")
            w = _layout_widgets(studio)
            hires = hires_params(studio, "layout")
            run, _ = tab.buttons()
        with gr.Column(scale=1):
            tab.results()
    inputs = {**params, "boxes": w["boxes"], "gligen_fraction": w["gligen_fraction"],
              "image": w["image"], "mode": w["mode"], "append_phrases": w["append_phrases"],
              "attend_excite": w["attend_excite"], "excite_words": w["excite_words"]}
    to_api = run.click(user_errors(canvas_inputs), [w["canvas"], w["mode"]],
                       [w["boxes"], w["image"]], queue=False, **PRIVATE)
    tab.wire(to_api.success, inputs, api_name="layout", to_request=_layout_request,
             optional=("image", "attend_excite", "excite_words"), trailing=hires,
             doc="Generate with objects inside boxes (GLIGEN), or regenerate inside the boxes "
                 "of image.\n\nboxes: JSON list of {\"phrase\": \"a red bird\", \"box\": "
                 "[x0, y0, x1, y1]} normalised to 0-1. Returns [image, info JSON with seed and "
                 "file].")
    _wire_canvas(w, params)
    _wire_find(studio, w)


def _layout_request(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "boxes": data["boxes"] if data["boxes"] is not None else "",
            "image": data.get("image") or None}


def _layout_widgets(studio: Any) -> dict[str, Any]:
    """The mode, the box canvas and the API-shaped inputs it turns into."""
    w: dict[str, Any] = {}
    w["mode"] = gr.Radio(MODE_CHOICES, value="generate", label="Mode", elem_id="layout-mode")
    w["hint"] = gr.Markdown(HINTS["generate"])
    w["canvas"] = image_annotator(
        value={"image": blank_canvas(512, 512), "boxes": []},
        label="Layout: drag to draw a box, then type its phrase",
        image_type="pil", sources=["upload", "clipboard"], boxes_alpha=0.25,
        box_min_size=8, show_remove_button=True, show_clear_button=True,
        elem_id="layout-canvas",
    )
    with gr.Row():
        w["blank"] = gr.Button("Blank canvas (output size)", size="sm", elem_id="layout-blank")
        w["clear"] = gr.Button("Delete all boxes", size="sm", elem_id="layout-clear")
    with gr.Row():
        w["find_text"] = gr.Textbox(
            label="Find boxes by words", scale=3, elem_id="layout-find-text",
            placeholder="the dog (on an uploaded image: a box where it is, to regenerate)")
        w["find_threshold"] = gr.Slider(0.0, 1.0, value=0.3, step=0.01, label="Threshold",
                                        scale=1, elem_id="layout-find-threshold")
        w["find"] = gr.Button("Add boxes", size="sm", scale=1, elem_id="layout-find")
    w["append_phrases"] = gr.Checkbox(
        label="Append the phrases to the prompt", value=False,
        info="GLIGEN follows boxes best when the prompt also mentions the objects.",
        elem_id="layout-append_phrases",
    )
    w["gligen_fraction"] = gr.Slider(
        0, 1, value=studio.gligen_fraction, step=0.05, label="Grounding fraction",
        info="Share of the steps that follow the boxes (scheduled sampling); plain "
             "Stable Diffusion refines the rest. Higher = tighter boxes, less natural.",
        elem_id="layout-gligen_fraction",
    )
    w["attend_excite"] = gr.Checkbox(
        label="Attend-and-Excite", value=False, elem_id="layout-attend_excite",
        info="Nudges the image while it forms so that no subject of the prompt is left out.")
    w["excite_words"] = gr.Textbox(
        label="Subjects (comma-separated; empty = the nouns of the prompt)",
        elem_id="layout-excite_words")
    with gr.Accordion("Boxes and image as the API takes them", open=False):
        w["boxes"] = gr.Textbox(
            value="[]", lines=4, interactive=False,
            label="boxes (JSON; each box [x0, y0, x1, y1] normalised to 0-1)",
            elem_id="layout-boxes",
        )
        w["image"] = gr.Image(
            value=None, type="filepath", format="png", interactive=False, height=160,
            label="image (reference; sent only to regenerate inside boxes)",
            elem_id="layout-image",
        )
    for name in ("gligen_fraction", "image", "mode", "append_phrases"):
        labelled_input_errors(w[name])
    w["is_blank"] = gr.State(True)
    return w


def _wire_find(studio: Any, w: dict[str, Any]) -> None:
    """'Add boxes': the detector's boxes for the words join the canvas's boxes."""
    w["find"].click(user_errors(lambda v, t, thr: with_found_boxes(studio, v, t, thr)),
                    [w["canvas"], w["find_text"], w["find_threshold"]], w["canvas"],
                    **PRIVATE, **gpu_kwargs())


def _wire_canvas(w: dict[str, Any], params: dict[str, Any]) -> None:
    """UI-only helpers: live JSON view, blank canvas of the output size, mode hint."""
    canvas, is_blank = w["canvas"], w["is_blank"]
    register_target("Layout", "layout", [canvas, is_blank],
                    lambda path: [{"image": path, "boxes": []}, False])
    canvas.change(boxes_preview, canvas, w["boxes"], queue=False, **PRIVATE)
    canvas.upload(lambda: False, None, is_blank, queue=False, **PRIVATE)
    canvas.clear(lambda: False, None, is_blank, queue=False, **PRIVATE)
    size = [params["width"], params["height"]]
    w["blank"].click(lambda v, width, height: (resized_blank(v, width, height), True),
                     [canvas, *size], [canvas, is_blank], queue=False, **PRIVATE)

    def follow_size(value: dict[str, Any] | None, blank: bool, width: float,
                    height: float) -> Any:
        return resized_blank(value, width, height) if blank else gr.skip()

    for side in size:
        side.release(follow_size, [canvas, is_blank, *size], canvas, queue=False, **PRIVATE)
    w["clear"].click(without_boxes, canvas, canvas, queue=False, **PRIVATE)
    w["mode"].change(lambda m: HINTS.get(m, ""), w["mode"], w["hint"], queue=False, **PRIVATE)
