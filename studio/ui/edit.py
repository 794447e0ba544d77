"""Edit tab: inpaint a masked region (brush or SAM clicks), everything else untouched.

API: `/inpaint` (image, mask, prompt, common parameters, only_masked, padding, mask_blur,
strength, mode) -> [image, info] and `/sam_mask` (image, points, box) -> [mask, info].
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

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
    segment,
    shrink_mask,
)

from .common import (
    PRIVATE,
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

CLICK_MODES = ("Object (+)", "Background (-)", "Box corners")


def build(studio: Any, gallery_hook: Any) -> None:
    """Build the tab inside the current Blocks context."""
    corner = gr.State(None)  # first corner of a box being clicked, [x, y]
    candidates = gr.State([])  # SAM's candidate masks (PIL) to pick from
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(label="Image to edit", type="filepath", format="png",
                             sources=["upload", "clipboard"], elem_id="edit-image")
            with gr.Tabs():
                with gr.Tab("Paint the mask"):
                    editor = gr.ImageEditor(
                        label="Paint over what should change", type="pil", format="png",
                        image_mode="RGBA", sources=[], layers=False, transforms=[],
                        brush=gr.Brush(colors=[("#ff3030", 0.6)], color_mode="fixed",
                                       default_size=24),
                        elem_id="edit-editor",
                    )
                with gr.Tab("Click the object (SAM)"):
                    click_mode = gr.Radio(list(CLICK_MODES), value=CLICK_MODES[0],
                                          label="A click adds", elem_id="edit-click-mode")
                    sam_view = gr.Image(label="Click the object", type="pil", format="png",
                                        interactive=False, elem_id="edit-sam-view")
                    with gr.Row():
                        points = gr.Textbox(label="Points JSON [[x, y, label], ...]",
                                            value="[]", scale=2, elem_id="edit-points")
                        box = gr.Textbox(label="Box JSON [x0, y0, x1, y1]", value="", scale=1,
                                         elem_id="edit-box")
                    with gr.Row():
                        segment_btn = gr.Button("Segment", elem_id="edit-segment")
                        undo_btn = gr.Button("Undo last click", elem_id="edit-undo")
                        reset_btn = gr.Button("Reset clicks", elem_id="edit-reset")
                    gallery = gr.Gallery(label="Candidate masks: pick one", columns=3,
                                         height=160, allow_preview=False, type="pil",
                                         format="png", elem_id="edit-candidates")
                    with gr.Accordion("SAM info", open=False):
                        sam_info = gr.Code(label="SAM info", language="json")
            mask = gr.Image(label="Mask (white = change); upload one or make it above",
                            type="filepath", format="png", image_mode=None,
                            sources=["upload", "clipboard"], elem_id="edit-mask")
            with gr.Row():
                grow_px = gr.Slider(1, 128, value=8, step=1, label="Grow / shrink by (px)",
                                    elem_id="edit-grow-px")
                mask_blur = gr.Slider(0, 64, value=4, step=1, label="Feather (px)",
                                      info="Soft edge inside the mask; outside stays exact.",
                                      elem_id="edit-mask_blur")
            with gr.Row():
                grow_btn = gr.Button("Grow", size="sm", elem_id="edit-grow")
                shrink_btn = gr.Button("Shrink", size="sm", elem_id="edit-shrink")
                invert_btn = gr.Button("Invert", size="sm", elem_id="edit-invert")
                clear_btn = gr.Button("Clear", size="sm", elem_id="edit-clear")
        with gr.Column(scale=1):
            params = common_params(
                size=studio.native_size, prompt_placeholder="what should be in the masked area",
                elem_prefix="edit",
            )
            params["width"].label = "Only-masked working width"
            params["height"].label = "Only-masked working height"
            with gr.Row():
                mode = gr.Radio(["inpaint", "blend"], value="inpaint", label="Mode",
                                info="inpaint: inpainting model; blend: base model with "
                                     "latent blending", elem_id="edit-mode")
                strength = gr.Slider(0.0, 1.0, value=1.0, step=0.01,
                                     label="Denoising strength",
                                     info="1 = repaint from scratch; lower keeps more",
                                     elem_id="edit-strength")
            with gr.Row():
                only_masked = gr.Checkbox(
                    label="Only masked", value=False,
                    info="Inpaint a crop around the mask at the working size, paste it back.",
                    elem_id="edit-only_masked",
                )
                padding = gr.Slider(0, 256, value=32, step=1, label="Only-masked padding (px)",
                                    elem_id="edit-padding")
            with gr.Row():
                run = gr.Button("Inpaint", variant="primary", elem_id="edit-generate")
                stop = gr.Button("Stop", elem_id="edit-stop")
            result, info = result_outputs("edit")
            preview = gr.Image(label="Preview: red = will change", interactive=False,
                               format="png", elem_id="edit-preview")

    # ------------------------------------------------------------------ generation (API)
    @spaces_gpu
    @user_errors
    def inpaint(
        image: dict | None, mask: dict | None, prompt: str, negative_prompt: str, seed: float,
        steps: float, guidance_scale: float, width: float, height: float, scheduler: str,
        fast: bool, only_masked: bool, padding: float, mask_blur: float, strength: float,
        mode: str, request: gr.Request = None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),
    ) -> tuple[str, str]:
        """Inpaint the white part of `mask` in `image`; outside pixels stay exactly as they were.

        The output has the image's size. Full image: works at the image size rounded to
        multiples of 8 (width/height are ignored). only_masked: a crop around the mask
        (+ padding) is inpainted at width x height and pasted back. Returns [image, info].
        """
        session = session_of(request)
        result = studio.inpaint(
            {
                "image": image, "mask": mask, "prompt": prompt or "",
                "negative_prompt": negative_prompt or "", "seed": _num(seed),
                "steps": _num(steps), "guidance_scale": _num(guidance_scale),
                "width": _num(width), "height": _num(height), "scheduler": scheduler,
                "fast": bool(fast), "only_masked": bool(only_masked), "padding": _num(padding),
                "mask_blur": _num(mask_blur), "strength": _num(strength), "mode": mode,
            },
            progress=progress_adapter(progress), cancel=studio.cancel_token(session),
        )
        for warning in result.info.get("warnings") or []:
            gr.Warning(warning)
        return str(result.path), info_json(result.info)

    p = params
    event = run.click(
        inpaint,
        inputs=[image, mask, p["prompt"], p["negative_prompt"], p["seed"], p["steps"],
                p["guidance_scale"], p["width"], p["height"], p["scheduler"], p["fast"],
                only_masked, padding, mask_blur, strength, mode],
        outputs=[result, info], api_name="inpaint", **gpu_kwargs(),
        # Raw payloads: the backend validates every value itself, so a non-image upload or
        # an out-of-range number gets a message naming the parameter (uploaded files are
        # still moved into gradio's cache and checked by gradio before we see them).
        preprocess=False,
    )
    gallery_hook(event, result)
    stop.click(stop_handler(studio), None, None,
               queue=False, **PRIVATE)

    # ------------------------------------------------------------------ SAM (API)
    @spaces_gpu
    @user_errors
    def sam_mask(image: dict | None, points: str, box: str) -> tuple[Any, str, list]:
        """Segment with SAM from clicks `[[x, y, label], ...]` (label 1 = object, 0 = not)
        and an optional box `[x0, y0, x1, y1]`, in image pixels. Returns [mask, info]."""
        m, sinfo, cands = segment(studio, image, points, box)
        return m, info_json(sinfo), cands

    seg_event = segment_btn.click(sam_mask, [image, points, box], [mask, sam_info, candidates],
                                  api_name="sam_mask", preprocess=False, **gpu_kwargs())

    def show_sam(image: str | None, points: str, box: str, corner: Any, mask: str | None,
                 cands: list, sinfo: str) -> tuple[Any, Any]:
        return _sam_view(image, points, box, corner, mask), _gallery(cands, sinfo)

    seg_event.success(show_sam, [image, points, box, corner, mask, candidates, sam_info],
                      [sam_view, gallery], **PRIVATE)

    # ------------------------------------------------------------------ SAM clicks (UI)
    @user_errors
    def add_click(image: str | None, points: str, box: str, corner: Any, click_mode: str,
                  evt: gr.SelectData) -> tuple[str, str, Any, Any]:
        if image is None:
            raise gr.Error("Upload an image first.")
        x, y = (int(v) for v in evt.index[:2])
        pts = parse_points(points)
        if click_mode == CLICK_MODES[2]:
            if corner is None:
                return points, box, [x, y], _sam_view(image, pts, box, [x, y], None)
            (cx, cy), (x0, x1), (y0, y1) = corner, sorted((corner[0], x)), sorted((corner[1], y))
            if x1 - x0 < 2 or y1 - y0 < 2:
                raise gr.Error(f"The box from ({cx}, {cy}) to ({x}, {y}) is too thin.")
            box = json.dumps([x0, y0, x1, y1])
            return points, box, None, gr.skip()
        pts.append([x, y, 1 if click_mode == CLICK_MODES[0] else 0])
        return json.dumps([[int(a), int(b), c] for a, b, c in pts]), box, None, gr.skip()

    @spaces_gpu
    @user_errors
    def resegment(image: str | None, points: str, box: str, corner: Any) -> tuple[Any, ...]:
        """Run SAM after a click (nothing to do while a box is half drawn)."""
        if corner is not None or image is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        pts, bx = parse_points(points), parse_box(box)
        if not any(label == 1 for *_, label in pts) and bx is None:
            return gr.skip(), gr.skip(), _sam_view(image, points, box, None, None), [], []
        m, sinfo, cands = segment(studio, image, points, box)
        return (m, info_json(sinfo), _sam_view(image, points, box, None, m),
                _gallery(cands, sinfo), cands)

    sam_view.select(
        add_click, [image, points, box, corner, click_mode], [points, box, corner, sam_view],
        queue=False, **PRIVATE,
    ).success(
        resegment, [image, points, box, corner], [mask, sam_info, sam_view, gallery, candidates],
        **PRIVATE, **gpu_kwargs(),
    )

    def pick_candidate(image: str | None, points: str, box: str, cands: list,
                       evt: gr.SelectData) -> tuple[Any, Any]:
        """Use the picked candidate as the mask, and show it in the click view too."""
        if not cands or evt.index is None or evt.index >= len(cands):
            return gr.skip(), gr.skip()
        return cands[evt.index], _sam_view(image, points, box, None, cands[evt.index])

    gallery.select(pick_candidate, [image, points, box, candidates], [mask, sam_view], **PRIVATE)

    def undo_click(image: str | None, points: str, box: str) -> tuple[str, str, Any, Any]:
        pts = _safe_points(points)
        if pts:
            pts.pop()
        elif box.strip():
            box = ""
        return json.dumps(pts), box, None, _sam_view(image, pts, box, None, None)

    def reset_clicks(image: str | None) -> tuple[str, str, Any, Any, list, list]:
        return "[]", "", None, _sam_view(image, [], "", None, None), [], []

    undo_btn.click(undo_click, [image, points, box], [points, box, corner, sam_view],
                   queue=False, **PRIVATE).success(
        resegment, [image, points, box, corner], [mask, sam_info, sam_view, gallery, candidates],
        **PRIVATE, **gpu_kwargs(),
    )
    reset_btn.click(reset_clicks, [image], [points, box, corner, sam_view, gallery, candidates],
                    queue=False, **PRIVATE)

    # ------------------------------------------------------------------ image and brush
    def new_image(image: str | None) -> tuple[Any, ...]:
        """A new image: it becomes the brush canvas and the click view; old masks go."""
        if image is None:
            return None, None, "[]", "", None, None, [], []
        editor_value = {"background": image, "layers": [], "composite": image}
        return editor_value, image, "[]", "", None, None, [], []

    image.upload(new_image, [image],
                 [editor, sam_view, points, box, corner, mask, gallery, candidates], **PRIVATE)
    image.clear(new_image, [image],
                [editor, sam_view, points, box, corner, mask, gallery, candidates], **PRIVATE)

    @user_errors
    def brush_to_mask(value: Any) -> Any:
        m = mask_from_editor(value)
        if m is None or not binary_array(m).any():
            return None
        return m

    editor.change(brush_to_mask, [editor], [mask], **PRIVATE)

    # ------------------------------------------------------------------ mask tools
    @user_errors
    def tool(name: str, mask: str | None, px: float, image: str | None) -> Any:
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

    for btn, name in ((grow_btn, "grow"), (shrink_btn, "shrink"), (invert_btn, "invert"),
                      (clear_btn, "clear")):
        btn.click(lambda m, px, im, _n=name: tool(_n, m, px, im), [mask, grow_px, image],
                  [mask], **PRIVATE)

    def clear_brush(image: str | None) -> tuple[Any, str, str, Any, list, list]:
        editor_value = None if image is None else {
            "background": image, "layers": [], "composite": image,
        }
        return editor_value, "[]", "", None, [], []

    clear_btn.click(clear_brush, [image], [editor, points, box, corner, gallery, candidates],
                    **PRIVATE)

    def show_preview(image: str | None, mask: str | None, blur: float) -> Any:
        if image is None or mask is None:
            return None
        try:
            img = load_image(image, "image")
            m = from_binary(binary_array(load_image(mask, "mask", mode="L")))
            return mask_overlay(img, m, float(blur or 0))
        except (ValueError, OSError):
            return None

    for trigger in (mask.change, mask_blur.release):
        trigger(show_preview, [image, mask, mask_blur], [preview], **PRIVATE)


def _gallery(cands: list, sinfo: Any) -> list[tuple[Any, str]]:
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


def _sam_view(image: str | None, points: Any, box: Any, corner: Any, mask: Any) -> Any:
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
