"""Edit tab: inpaint a masked region (brush or SAM clicks), everything else untouched.

API: `/inpaint` (image, mask, prompt, common parameters, only_masked, padding, mask_blur,
strength, mode) -> [image, info] and `/sam_mask` (image, points, box) -> [mask, info].
The click and mask-tool logic lives in module-level functions (tested without a browser);
`build` only lays out the widgets and wires them.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
from PIL import Image, ImageChops

from studio.backend.images import load_image
from studio.backend.requests import RequestError
from studio.backend.tasks.inpaint import (
    binary_array,
    draw_prompts,
    from_binary,
    grow_mask,
    invert_mask,
    mask_from_editor,
    mask_overlay,
    parse_box,
    parse_points,
    shrink_mask,
)
from studio.backend.tasks.outpaint import extend_to_ratio_text

from .common import PRIVATE, GenerationTab, gpu_kwargs, info_json, spaces_gpu, user_errors
from .sendto import register_target

CLICK_MODES = ("Object (+)", "Background (-)", "Box corners")
INPAINT_PARAMS = ("only_masked", "padding", "mask_blur", "strength", "mode")
OUTPAINT_SIDES = ("left", "right", "top", "bottom")
ASPECT_RATIOS = ("1:1", "4:3", "3:2", "16:9", "21:9", "3:4", "2:3", "9:16")
SKETCH_COLOURS = ["#e02020", "#20b020", "#2040e0", "#f0d020", "#8030c0", "#ffffff", "#000000",
                  "#806040"]
SKETCH_STRENGTH = 0.75  # A1111's inpaint sketch default: the painted colours survive


# ---------------------------------------------------------------------------- click logic
def add_click(points: str, box: str, corner: list[int] | None, mode: str, x: int, y: int
              ) -> tuple[str, str, list[int] | None]:
    """A click at (x, y) in `mode`: a point (+ object, - background) or a box corner.

    Returns the new (points JSON, box JSON, pending corner). The first corner of a box is
    held until the second click, which makes the box.
    """
    pts = parse_points(points)
    if mode == CLICK_MODES[2]:
        if corner is None:
            return points, box, [x, y]
        (cx, cy), (x0, x1), (y0, y1) = corner, sorted((corner[0], x)), sorted((corner[1], y))
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise RequestError(f"The box from ({cx}, {cy}) to ({x}, {y}) is too thin.")
        return points, json.dumps([x0, y0, x1, y1]), None
    pts.append([x, y, 1 if mode == CLICK_MODES[0] else 0])
    return json.dumps([[int(a), int(b), c] for a, b, c in pts]), box, None


def undo_click(points: str, box: str) -> tuple[str, str]:
    """Drop the last click (or, with no clicks left, the box)."""
    pts = _safe_points(points)
    if pts:
        pts.pop()
    elif box.strip():
        box = ""
    return json.dumps(pts), box


def has_prompt(points: str, box: str) -> bool:
    """True when the clicks include an object click, or there is a box: SAM has a prompt."""
    return any(label == 1 for *_, label in parse_points(points)) or parse_box(box) is not None


def mask_tool(name: str, mask: str | None, px: float) -> Any:
    """Grow, shrink, invert or clear the mask (None when nothing is left of it)."""
    if name == "clear":
        return None
    if mask is None:
        raise RequestError("there is no mask yet: paint one or click the object first")
    m = load_image(mask, "mask", mode="L")
    if name == "grow":
        return grow_mask(m, int(px))
    if name == "shrink":
        out = shrink_mask(m, int(px))
        return out if binary_array(out).any() else None
    return invert_mask(m)


def brush_to_mask(value: Any) -> Any:
    """The mask painted in the brush editor (None when nothing is painted)."""
    m = mask_from_editor(value)
    if m is None or not binary_array(m).any():
        return None
    return m


def sketch_inputs(value: Any, strength: float) -> tuple[Any, Any, Any]:
    """Inpaint sketch (A1111's): (the image with the paint on it, the painted area as the
    mask, the strength: 1 lowered to SKETCH_STRENGTH so the colours guide the new content).
    Every stroke erased: the original image back, and no mask."""
    if not isinstance(value, dict) or value.get("background") is None:
        return gr.skip(), gr.skip(), gr.skip()
    background = load_image(value["background"], "image", mode="RGBA")
    painted, paint = background.copy(), Image.new("L", background.size, 0)
    for layer in value.get("layers") or []:  # each layer read once: paint and mask
        if layer is not None:
            img = load_image(layer, "sketch layer", mode="RGBA")
            if img.size != background.size:
                img = img.resize(background.size, Image.Resampling.NEAREST)
            painted.alpha_composite(img)
            paint = ImageChops.lighter(paint, img.getchannel("A"))
    if paint.getbbox() is None:  # every stroke erased: the original image, no mask
        return background.convert("RGB"), None, gr.skip()
    mask = paint.point(lambda v: 255 if v > 0 else 0)  # every painted pixel, as the brush's
    lowered = SKETCH_STRENGTH if float(strength or 0) >= 1.0 else gr.skip()
    return painted.convert("RGB"), mask, lowered


def editor_value(image: str | None) -> dict[str, Any] | None:
    """The brush editor showing `image` with no strokes."""
    return None if image is None else {"background": image, "layers": [], "composite": image}


def mask_preview(image: str | None, mask: str | None, blur: float) -> Any:
    """The image with the feathered mask tinted red (None if either is missing)."""
    if image is None or mask is None:
        return None
    try:
        img = load_image(image, "image")
        m = from_binary(binary_array(load_image(mask, "mask", mode="L")))
        return mask_overlay(img, m, float(blur or 0))
    except (ValueError, OSError):
        return None


def sam_view(image: str | None, points: Any, box: Any, corner: Any, mask: Any) -> Any:
    """The click view: image, current SAM mask, clicks and box (None without an image)."""
    if image is None:
        return None
    try:
        img = load_image(image, "image")
        m = None
        if mask is not None:
            m = mask if not isinstance(mask, str) else load_image(mask, "mask", mode="L")
            m = from_binary(binary_array(m))
        return draw_prompts(img, points, box, m, corner)
    except ValueError:
        return load_image(image, "image")


def candidate_gallery(cands: list, sinfo: Any) -> list[tuple[Any, str]]:
    """Candidate masks captioned with SAM's predicted quality (when it reported scores)."""
    if isinstance(sinfo, str):
        try:
            sinfo = json.loads(sinfo)
        except json.JSONDecodeError:
            sinfo = {}
    scores = (sinfo or {}).get("candidates")
    if not isinstance(scores, list) or len(scores) != len(cands or []):
        scores = [None] * len(cands or [])
    return [(c, f"candidate {i + 1}" + ("" if s is None else f" (score {s:.2f})"))
            for i, (c, s) in enumerate(zip(cands or [], scores, strict=True))]


def _safe_points(points: str) -> list[list[float]]:
    try:
        return parse_points(points)
    except ValueError:
        return []


# ---------------------------------------------------------------------------- layout
def build(studio: Any, gallery_hook: Any) -> None:
    """Build the tab inside the current Blocks context."""
    tab = GenerationTab(studio, "inpaint", gallery_hook, prefix="edit")
    with gr.Row():
        with gr.Column(scale=1):
            w = _mask_widgets()
        with gr.Column(scale=1):
            params = tab.params(prompt_placeholder="what should be in the masked area")
            params["width"].label = "Only-masked working width"
            params["height"].label = "Only-masked working height"
            w.update(_inpaint_widgets())
            run, _ = tab.buttons("Inpaint")
            w.update(_extend_widgets())
            tab.results()
            w["preview"] = gr.Image(label="Preview: red = will change", interactive=False,
                                    format="png", elem_id="edit-preview")
    # Raw payloads (preprocess=False): the backend validates every value itself, so a
    # non-image upload or an out-of-range number gets a message naming the parameter.
    tab.wire(run.click, {"image": w["image"], "mask": w["mask"], **params,
                         **{k: w[k] for k in INPAINT_PARAMS}},
             api_name="inpaint", preprocess=False,
             doc="Inpaint the white part of `mask` in `image`; outside pixels stay exactly as "
                 "they were.\n\nThe output has the image's size. Full image: works at the "
                 "image size rounded to multiples of 8 (width/height are ignored). "
                 "only_masked: a crop around the mask (+ padding) is inpainted at width x "
                 "height and pasted back. Returns [image, info].")
    _wire_extend(studio, gallery_hook, tab, w, params)
    _wire_sam(studio, w)
    _wire_text(studio, w)
    _wire_mask_tools(w)


def _mask_widgets() -> dict[str, Any]:
    """The image, the two ways to make a mask (brush, SAM clicks) and the mask itself."""
    w: dict[str, Any] = {"corner": gr.State(None), "candidates": gr.State([])}
    w["image"] = gr.Image(label="Image to edit", type="filepath", format="png",
                          sources=["upload", "clipboard"], elem_id="edit-image")
    with gr.Tabs():
        with gr.Tab("Paint the mask"):
            w["editor"] = gr.ImageEditor(
                label="Paint over what should change", type="pil", format="png",
                image_mode="RGBA", sources=[], layers=False, transforms=[],
                brush=gr.Brush(colors=[("#ff3030", 0.6)], color_mode="fixed", default_size=24),
                elem_id="edit-editor",
            )
        with gr.Tab("Sketch colours"):
            w["sketch"] = gr.ImageEditor(
                label="Paint colours on the image: the paint is the mask, its colours guide "
                      "the new content", type="pil", format="png", image_mode="RGBA",
                sources=[], layers=False, transforms=[],
                brush=gr.Brush(colors=SKETCH_COLOURS, color_mode="defaults", default_size=16),
                elem_id="edit-sketch",
            )
        with gr.Tab("Click the object (SAM)"):
            w.update(_sam_widgets())
        with gr.Tab("Describe it"):
            w.update(_text_widgets())
    w["mask"] = gr.Image(label="Mask (white = change); upload one or make it above",
                         type="filepath", format="png", image_mode=None,
                         sources=["upload", "clipboard"], elem_id="edit-mask")
    with gr.Row():
        w["grow_px"] = gr.Slider(1, 128, value=8, step=1, label="Grow / shrink by (px)",
                                 elem_id="edit-grow-px")
        w["mask_blur"] = gr.Slider(0, 64, value=4, step=1, label="Feather (px)",
                                   info="Soft edge inside the mask; outside stays exact.",
                                   elem_id="edit-mask_blur")
    with gr.Row():
        for name in ("grow", "shrink", "invert", "clear"):
            w[name] = gr.Button(name.capitalize(), size="sm", elem_id=f"edit-{name}")
    return w


def _sam_widgets() -> dict[str, Any]:
    w: dict[str, Any] = {}
    w["click_mode"] = gr.Radio(list(CLICK_MODES), value=CLICK_MODES[0],
                               label="A click adds", elem_id="edit-click-mode")
    w["sam_view"] = gr.Image(label="Click the object", type="pil", format="png",
                             interactive=False, elem_id="edit-sam-view")
    with gr.Row():
        w["points"] = gr.Textbox(label="Points JSON [[x, y, label], ...]", value="[]",
                                 scale=2, elem_id="edit-points")
        w["box"] = gr.Textbox(label="Box JSON [x0, y0, x1, y1]", value="", scale=1,
                              elem_id="edit-box")
    with gr.Row():
        w["segment"] = gr.Button("Segment", elem_id="edit-segment")
        w["undo"] = gr.Button("Undo last click", elem_id="edit-undo")
        w["reset"] = gr.Button("Reset clicks", elem_id="edit-reset")
    w["gallery"] = gr.Gallery(label="Candidate masks: pick one", columns=3, height=160,
                              allow_preview=False, type="pil", format="png",
                              elem_id="edit-candidates")
    with gr.Accordion("SAM info", open=False):
        w["sam_info"] = gr.Code(label="SAM info", language="json")
    return w


def _text_widgets() -> dict[str, Any]:
    w: dict[str, Any] = {"found": gr.State({})}
    with gr.Row():
        w["text"] = gr.Textbox(label="What to change", placeholder="the dog (several: a cat. "
                               "a bowl)", scale=3, elem_id="edit-text")
        w["threshold"] = gr.Slider(0.0, 1.0, value=0.3, step=0.01, label="Box threshold",
                                   scale=1, elem_id="edit-threshold")
    w["find"] = gr.Button("Find", elem_id="edit-find")
    w["boxes_view"] = gr.AnnotatedImage(label="Found: label and score", show_legend=True,
                                        elem_id="edit-boxes")
    w["objects"] = gr.CheckboxGroup(label="Objects in the mask (untick to drop one)",
                                    choices=[], elem_id="edit-objects")
    with gr.Accordion("Detection info", open=False):
        w["text_info"] = gr.Code(label="Detection info", language="json")
    return w


def _inpaint_widgets() -> dict[str, Any]:
    w: dict[str, Any] = {}
    with gr.Row():
        w["mode"] = gr.Radio(["inpaint", "blend"], value="inpaint", label="Mode",
                             info="inpaint: inpainting model; blend: base model with latent "
                                  "blending", elem_id="edit-mode")
        w["strength"] = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="Denoising strength",
                                  info="1 = repaint from scratch; lower keeps more",
                                  elem_id="edit-strength")
    with gr.Row():
        w["only_masked"] = gr.Checkbox(
            label="Only masked", value=False,
            info="Inpaint a crop around the mask at the working size, paste it back.",
            elem_id="edit-only_masked",
        )
        w["padding"] = gr.Slider(0, 256, value=32, step=1, label="Only-masked padding (px)",
                                 elem_id="edit-padding")
    return w


def _extend_widgets() -> dict[str, Any]:
    """Outpainting: the pixels to add on each side (or to reach an aspect ratio)."""
    w: dict[str, Any] = {}
    with gr.Accordion("Extend the canvas (outpaint)", open=False, elem_id="edit-extend-box"):
        with gr.Row():
            for side in OUTPAINT_SIDES:
                w[side] = gr.Slider(0, 1024, value=0, step=8, label=f"Add {side} (px)",
                                    elem_id=f"edit-{side}")
        with gr.Row():
            w["ratio"] = gr.Dropdown(list(ASPECT_RATIOS), value=None, label="Or extend to",
                                     allow_custom_value=True, elem_id="edit-ratio", scale=2,
                                     info="an aspect ratio (16:9, 1.5): fills the sides")
            w["extend"] = gr.Button("Extend", variant="primary", elem_id="edit-extend",
                                    scale=1)
    return w


def ratio_sides(image: str | None, ratio: str | None) -> list[int]:
    """The side sliders' values to reach `ratio` from `image`'s size."""
    if not image or not ratio:
        raise RequestError("upload an image and pick an aspect ratio first")
    sides = extend_to_ratio_text(load_image(image, "image").size, ratio)
    return [sides[s] for s in OUTPAINT_SIDES]


# ---------------------------------------------------------------------------- wiring
def _wire_extend(studio: Any, gallery_hook: Any, inpaint_tab: GenerationTab,
                 w: dict[str, Any], params: dict[str, Any]) -> None:
    """`/outpaint`: the same image, prompt and settings as Inpaint, shown in its result."""
    tab = GenerationTab(studio, "outpaint", gallery_hook, prefix="edit")
    tab.image, tab.info = inpaint_tab.image, inpaint_tab.info
    w["ratio"].input(user_errors(ratio_sides), [w["image"], w["ratio"]],
                     [w[s] for s in OUTPAINT_SIDES], queue=False, **PRIVATE)
    tab.wire(w["extend"].click, {"image": w["image"], **params,
                                 **{s: w[s] for s in OUTPAINT_SIDES},
                                 "mask_blur": w["mask_blur"], "mode": w["mode"]},
             api_name="outpaint", preprocess=False,
             doc="Extend `image` by `left`, `right`, `top`, `bottom` pixels and fill the new "
                 "area from the prompt with the inpainting model; the original pixels stay "
                 "exactly as they were, the seam fades in over `mask_blur` px outside them. "
                 "Works on the whole canvas at its size (width/height are ignored). Returns "
                 "[image, info].")


def _wire_sam(studio: Any, w: dict[str, Any]) -> None:
    """`/sam_mask`, and the click view that runs it after every click."""
    prompts = [w["image"], w["points"], w["box"]]
    outputs = [w["mask"], w["sam_info"], w["sam_view"], w["gallery"], w["candidates"]]

    @spaces_gpu
    @user_errors
    def sam_mask(image: dict | None, points: str, box: str) -> tuple[Any, str, list]:
        """Segment with SAM from clicks `[[x, y, label], ...]` (label 1 = object, 0 = not)
        and an optional box `[x0, y0, x1, y1]`, in image pixels. Returns [mask, info]."""
        m, sinfo, cands = studio.segment(image, points, box)
        return m, info_json(sinfo), cands

    seg = w["segment"].click(sam_mask, prompts, [w["mask"], w["sam_info"], w["candidates"]],
                             api_name="sam_mask", preprocess=False, **gpu_kwargs())
    seg.success(lambda im, p, b, c, m, cands, info: (sam_view(im, p, b, c, m),
                                                     candidate_gallery(cands, info)),
                [*prompts, w["corner"], w["mask"], w["candidates"], w["sam_info"]],
                [w["sam_view"], w["gallery"]], **PRIVATE)

    @spaces_gpu
    @user_errors
    def resegment(image: str | None, points: str, box: str, corner: Any) -> tuple[Any, ...]:
        """Run SAM after a click (nothing to do while a box is half drawn)."""
        if corner is not None or image is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        if not has_prompt(points, box):
            return gr.skip(), gr.skip(), sam_view(image, points, box, None, None), [], []
        m, sinfo, cands = studio.segment(image, points, box)
        return (m, info_json(sinfo), sam_view(image, points, box, None, m),
                candidate_gallery(cands, sinfo), cands)

    @user_errors
    def click(image: str | None, points: str, box: str, corner: Any, mode: str,
              evt: gr.SelectData) -> tuple[str, str, Any, Any]:
        if image is None:
            raise gr.Error("Upload an image first.")
        points, box, corner = add_click(points, box, corner, mode, *map(int, evt.index[:2]))
        view = sam_view(image, points, box, corner, None) if corner else gr.skip()
        return points, box, corner, view

    clicks = [w["points"], w["box"], w["corner"], w["sam_view"]]
    w["sam_view"].select(click, [*prompts, w["corner"], w["click_mode"]], clicks,
                         queue=False, **PRIVATE).success(
        resegment, [*prompts, w["corner"]], outputs, **PRIVATE, **gpu_kwargs())
    def undo(image: str | None, points: str, box: str) -> tuple[str, str, None, Any]:
        points, box = undo_click(points, box)
        return points, box, None, sam_view(image, points, box, None, None)

    w["undo"].click(undo, prompts, clicks, queue=False, **PRIVATE).success(
        resegment, [*prompts, w["corner"]], outputs, **PRIVATE, **gpu_kwargs())
    w["reset"].click(lambda im: ("[]", "", None, sam_view(im, [], "", None, None), [], []),
                     [w["image"]], [*clicks, w["gallery"], w["candidates"]],
                     queue=False, **PRIVATE)

    def pick(image: str | None, points: str, box: str, cands: list,
             evt: gr.SelectData) -> tuple[Any, Any]:
        """Use the picked candidate as the mask, and show it in the click view too."""
        if not cands or evt.index is None or evt.index >= len(cands):
            return gr.skip(), gr.skip()
        return cands[evt.index], sam_view(image, points, box, None, cands[evt.index])

    w["gallery"].select(pick, [*prompts, w["candidates"]], [w["mask"], w["sam_view"]],
                        **PRIVATE)


def object_choices(info: dict[str, Any]) -> list[str]:
    """The checkbox labels of found objects: "1. the dog (0.87)", in the detector's order."""
    return [f"{i}. {label} ({score:.2f})" for i, (label, score) in
            enumerate(zip(info.get("labels", []), info.get("scores", []), strict=False), 1)]


def boxes_view(image: str | None, info: dict[str, Any], chosen: list[str]) -> Any:
    """(image, [(box, label), ...]) for gr.AnnotatedImage: the objects still ticked."""
    if not image or not info:
        return None
    names = object_choices(info)
    return image, [(tuple(int(round(v)) for v in box), name)
                   for box, name in zip(info["boxes"], names, strict=False) if name in chosen]


def _wire_text(studio: Any, w: dict[str, Any]) -> None:
    """`/text_mask`, and the found objects the user ticks or drops."""

    @spaces_gpu
    @user_errors
    def text_mask(image: dict | None, text: str, threshold: float = 0.3) -> tuple[Any, str]:
        """Select what `text` names ("the dog"; several things separated by "."): boxes
        from the open-vocabulary detector, a SAM mask for each, their union. Returns
        [mask, info]; info has `boxes` ([x0, y0, x1, y1] in image pixels), `labels` and
        `scores`."""
        mask, info = studio.text_mask(image, text, threshold)
        return mask, info_json(info)

    found = w["find"].click(text_mask, [w["image"], w["text"], w["threshold"]],
                            [w["mask"], w["text_info"]], api_name="text_mask",
                            preprocess=False, **gpu_kwargs())

    def show(image: str | None, info_text: str) -> tuple[Any, ...]:
        info = json.loads(info_text or "{}")
        names = object_choices(info)
        return (info, gr.update(choices=names, value=names), boxes_view(image, info, names))

    found.success(show, [w["image"], w["text_info"]],
                  [w["found"], w["objects"], w["boxes_view"]], **PRIVATE)

    @spaces_gpu
    @user_errors
    def pick(image: str | None, info: dict[str, Any], chosen: list[str]) -> tuple[Any, Any]:
        """The mask of the objects still ticked (SAM again on their boxes only)."""
        if not image or not info:
            return gr.skip(), gr.skip()
        names = object_choices(info)
        boxes = [b for b, n in zip(info["boxes"], names, strict=False) if n in chosen]
        return studio.mask_from_boxes(image, boxes), boxes_view(image, info, chosen)

    w["objects"].input(pick, [w["image"], w["found"], w["objects"]],
                       [w["mask"], w["boxes_view"]], **PRIVATE, **gpu_kwargs())


def _wire_mask_tools(w: dict[str, Any]) -> None:
    """A new image resets everything; the brush paints the mask; grow/shrink/invert/clear."""
    resets = [w["editor"], w["sketch"], w["sam_view"], w["points"], w["box"], w["corner"],
              w["mask"], w["gallery"], w["candidates"], w["found"], w["objects"],
              w["boxes_view"]]

    def new_image(image: str | None) -> tuple[Any, ...]:
        return (editor_value(image), editor_value(image), image, "[]", "", None, None, [], [],
                {}, gr.update(choices=[], value=[]), None)

    for event in (w["image"].upload, w["image"].clear):
        event(new_image, [w["image"]], resets, **PRIVATE)
    register_target("Edit", "edit", [w["image"], *resets],
                    lambda path: [path, *new_image(path)])
    w["editor"].change(user_errors(brush_to_mask), [w["editor"]], [w["mask"]], **PRIVATE)
    # the sketch's paint goes onto the image itself (its background stays the original, so
    # erasing a stroke brings the original back); `input`: the editor's `change` does not
    # fire for strokes on a canvas built in a tab that was hidden at page load
    w["sketch"].input(user_errors(sketch_inputs), [w["sketch"], w["strength"]],
                       [w["image"], w["mask"], w["strength"]], **PRIVATE)
    for name in ("grow", "shrink", "invert", "clear"):
        w[name].click(user_errors(lambda m, px, _n=name: mask_tool(_n, m, px)),
                      [w["mask"], w["grow_px"]], [w["mask"]], **PRIVATE)
    w["clear"].click(lambda im: (editor_value(im), "[]", "", None, [], []), [w["image"]],
                     [w["editor"], w["points"], w["box"], w["corner"], w["gallery"],
                      w["candidates"]], **PRIVATE)
    for trigger in (w["mask"].change, w["mask_blur"].release):
        trigger(mask_preview, [w["image"], w["mask"], w["mask_blur"]], [w["preview"]],
                **PRIVATE)
