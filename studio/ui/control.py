"""Control tab: a sketch or a photo -> control map (preview, fix a pose) -> ControlNet image.

Named API (both on the GPU queue):
- `/control`: common parameters + `images` (files) + `units` (JSON list aligned with images)
  + optional `init_image` and `strength`; returns [image, info].
- `/annotate`: `image`, `annotator`, `resolution`; returns [control_map, info] (info holds
  "keypoints" for openpose).
The tab's own Generate button runs a private event that turns the unit widgets into the same
request as the API.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
from PIL import Image

from studio.backend.images import load_image
from studio.backend.tasks.control import (
    ANNOTATORS,
    MAX_UNITS,
    RESIZE_MODES,
    annotate_image,
    render_pose,
    units_from_api,
)

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

UNIT_TYPES = ("scribble", "canny", "depth", "openpose")
DEFAULT_TYPES = ("scribble", "openpose", "depth")
CANVAS = (512, 512)
RESIZE_CHOICES = [(f"{label} ({key})", key) for key, label in RESIZE_MODES.items()]


def _blank_canvas() -> dict[str, Any]:
    """A white sketch canvas (dark strokes on white; the scribble annotator inverts them)."""
    return {"background": Image.new("RGB", CANVAS, "white"), "layers": [], "composite": None}


class UnitWidgets:
    """The widgets of one control unit (built inside its accordion)."""

    def __init__(self, index: int, types: tuple[str, ...] = UNIT_TYPES,
                 resolution: int = 512) -> None:
        first = index == 0
        eid = f"control-unit{index + 1}"
        default = DEFAULT_TYPES[index] if DEFAULT_TYPES[index] in types else types[0]
        with gr.Row():
            self.enabled = gr.Checkbox(label="Enable this unit", value=first,
                                       elem_id=f"{eid}-enabled")
            self.type = gr.Dropdown(list(types), value=default,
                                    label="Control type", elem_id=f"{eid}-type")
            self.source = gr.Radio([("Sketch", "sketch"), ("Photo or map", "image")],
                                   value="sketch" if first else "image", label="Input",
                                   elem_id=f"{eid}-source")
        self.sketch = gr.ImageEditor(
            value=_blank_canvas(), type="pil", image_mode="RGB", format="png",
            canvas_size=CANVAS, sources=("upload", "clipboard"), layers=False,
            brush=gr.Brush(colors=["#000000", "#404040", "#808080"], default_color="#000000",
                           color_mode="defaults"),
            eraser=gr.Eraser(), label="Sketch (dark strokes on white)", visible=first,
            elem_id=f"{eid}-sketch",
        )
        self.photo = gr.Image(label="Photo, or a ready control map", type="filepath",
                              visible=not first, elem_id=f"{eid}-photo")
        self.is_map = gr.Checkbox(
            label="Image is already a control map", value=False,
            info="Skip the annotator (for photos; sketches always go through scribble cleanup)",
        )
        with gr.Row():
            self.resolution = gr.Slider(64, 2048, value=resolution, step=64,
                                        label="Annotator resolution")
            self.resize_mode = gr.Radio(RESIZE_CHOICES, value="crop",
                                        label="Resize to output size")
        with gr.Row():
            self.weight = gr.Slider(0, 2, value=1.0, step=0.05, label="Weight")
            self.start = gr.Slider(0, 1, value=0.0, step=0.05, label="Start (fraction of steps)")
            self.end = gr.Slider(0, 1, value=1.0, step=0.05, label="End (fraction of steps)")
        self.preview_button = gr.Button("Preview control map", elem_id=f"{eid}-preview-button")
        self.preview = gr.Image(label="Control map preview", type="filepath", format="png",
                                interactive=False, elem_id=f"{eid}-preview")
        self.use_preview = gr.Checkbox(
            label="Generate with this preview", value=False,
            info="Set by Preview / Re-render pose; cleared when the input changes.",
            elem_id=f"{eid}-use-preview",
        )
        openpose = default == "openpose"
        self.keypoints = gr.Code(label="Pose keypoints (edit a wrong limb, then re-render)",
                                 language="json", value="", visible=openpose,
                                 elem_id=f"{eid}-keypoints")
        self.rerender = gr.Button("Re-render pose", visible=openpose, elem_id=f"{eid}-rerender")

    def unit(self, v: dict[Any, Any], index: int) -> dict[str, Any] | None:
        """The unit as a request dict from the widget values `v`, or None when disabled."""
        if not v[self.enabled]:
            return None
        unit: dict[str, Any] = {
            "type": v[self.type], "weight": v[self.weight], "start": v[self.start],
            "end": v[self.end], "resize_mode": v[self.resize_mode],
            "resolution": _num(v[self.resolution]),
        }
        if v[self.use_preview] and v[self.preview]:
            return {**unit, "image": v[self.preview], "preprocess": False}
        if v[self.source] == "sketch":
            return {**unit, "image": _sketch_image(v[self.sketch], index), "preprocess": True,
                    "annotator": "scribble"}
        if not v[self.photo]:
            raise gr.Error(f"unit {index}: upload a photo or a control map (or disable the unit)")
        return {**unit, "image": v[self.photo], "preprocess": not v[self.is_map]}

    def inputs(self) -> list[Any]:
        return [self.enabled, self.type, self.source, self.sketch, self.photo, self.is_map,
                self.resolution, self.resize_mode, self.weight, self.start, self.end,
                self.preview, self.use_preview]


def _sketch_image(value: Any, index: int) -> Any:
    if not isinstance(value, dict):
        return value
    image = value.get("composite") or value.get("background")
    if image is None:
        raise gr.Error(f"unit {index}: the sketch is empty; draw something first")
    return image


def build(studio: Any, gallery_hook: Any) -> None:
    """Build the tab inside the current Blocks context."""
    units: list[UnitWidgets] = []
    # Only the control types the model set has a ControlNet for (the toy world: two).
    types = tuple(t for t in UNIT_TYPES if t in studio.model_set.controlnets) or UNIT_TYPES
    with gr.Row():
        with gr.Column(scale=1):
            params = common_params(
                size=studio.native_size, prompt_placeholder="a knight on a horse, oil painting",
                elem_prefix="control",
            )
            for i in range(MAX_UNITS):
                with gr.Accordion(f"Control unit {i + 1}", open=i == 0,
                                  elem_id=f"control-unit{i + 1}"):
                    units.append(UnitWidgets(i, types, studio.native_size))
            with gr.Accordion("Init image (img2img with control)", open=False):
                init_image = gr.Image(label="Init image (optional)", type="filepath",
                                      elem_id="control-init-image")
                strength = gr.Slider(0.05, 1, value=0.75, step=0.05, label="Denoising strength")
            with gr.Row():
                run = gr.Button("Generate", variant="primary", elem_id="control-generate")
                stop = gr.Button("Stop", elem_id="control-stop")
        with gr.Column(scale=1):
            image, info = result_outputs(elem_prefix="control")
            maps = gr.Gallery(
                fit_columns=False, label="Control maps used", columns=3, height=200,
                elem_id="control-maps",
            )
    # Inputs and outputs of the headless endpoints (not shown in the UI).
    with gr.Group(visible=False):
        api_images = gr.File(label="images", file_count="multiple")
        api_units = gr.Textbox(label="units", value="[]")
        # Files, not gr.Image: a non-image upload then gets our clear message, not gradio's.
        api_init = gr.File(label="init_image", file_count="single")
        api_control = gr.Button("control")
        ann_image = gr.File(label="image", file_count="single")
        ann_name = gr.Dropdown(list(ANNOTATORS), value="canny", label="annotator")
        ann_resolution = gr.Number(label="resolution", value=512, precision=0)
        ann_map = gr.Image(label="control_map", type="filepath", format="png")
        ann_info = gr.Code(label="info", language="json")
        api_annotate = gr.Button("annotate")

    def generate(common: dict[str, Any], unit_list: list[dict[str, Any]], init: Any,
                 strength_value: Any, request: gr.Request | None, progress: Any) -> Any:
        result = studio.control(
            {**common, "units": unit_list, "init_image": init or None,
             "strength": _num(strength_value)},
            progress=progress_adapter(progress),
            cancel=studio.cancel_token(session_of(request)),
        )
        return result

    def common_values(prompt: str, negative_prompt: str, seed: Any, steps: Any,
                      guidance_scale: Any, width: Any, height: Any, scheduler: str,
                      fast: bool) -> dict[str, Any]:
        return {
            "prompt": prompt, "negative_prompt": negative_prompt or "", "seed": _num(seed),
            "steps": _num(steps), "guidance_scale": _num(guidance_scale), "width": _num(width),
            "height": _num(height), "scheduler": scheduler, "fast": bool(fast),
        }

    @spaces_gpu
    @user_errors
    def control(
        prompt: str, negative_prompt: str, seed: float, steps: float, guidance_scale: float,
        width: float, height: float, scheduler: str, fast: bool, images: list[str] | None,
        units: str, init_image: str | None = None, strength: float = 0.75,
        request: gr.Request = None, progress: gr.Progress = gr.Progress(track_tqdm=True),
    ) -> tuple[str, str]:
        """Generate with 1-3 control units. `units` is a JSON list aligned with `images`:
        {"type", "weight", "start", "end", "preprocess"} (+ "resize_mode", "resolution").
        Returns [image, info JSON with seed, file and control map file names]."""
        common = common_values(prompt, negative_prompt, seed, steps, guidance_scale, width,
                               height, scheduler, fast)
        result = generate(common, units_from_api(images, units), init_image, strength,
                          request, progress)
        return str(result.path), info_json(result.info)

    @spaces_gpu
    @user_errors
    def control_ui(values: dict[Any, Any], request: gr.Request = None,
                   progress: gr.Progress = gr.Progress(track_tqdm=True)) -> Any:
        common = common_values(*(values[c] for c in params.values()))
        unit_list = [u for i, w in enumerate(units, 1) if (u := w.unit(values, i)) is not None]
        if not unit_list:
            raise gr.Error("enable at least one control unit (or use the Text to image tab)")
        result = generate(common, unit_list, values[init_image], values[strength], request,
                          progress)
        return str(result.path), info_json(result.info), list(result.extra_images)

    @spaces_gpu
    @user_errors
    def annotate(image: str, annotator: str, resolution: float = 512) -> tuple[str, str]:
        """Run an annotator (canny, depth, openpose, scribble) on an image.
        Returns [control_map, info JSON] (info has "keypoints" for openpose)."""
        cmap, meta = annotate_image(studio, image, annotator, _num(resolution))
        path = studio.outputs.save_aux(cmap, f"annotate-{annotator}")
        full = {"annotator": annotator, "resolution": _num(resolution), "width": cmap.width,
                "height": cmap.height, "file": path.name, **meta}
        return str(path), info_json(full)

    api_event = api_control.click(
        control, inputs=[*params.values(), api_images, api_units, api_init, strength],
        outputs=[image, info], api_name="control", **gpu_kwargs(),
    )
    gallery_hook(api_event, image)
    api_annotate.click(annotate, inputs=[ann_image, ann_name, ann_resolution],
                       outputs=[ann_map, ann_info], api_name="annotate", **gpu_kwargs())

    all_inputs = {*params.values(), init_image, strength}
    for w in units:
        all_inputs.update(w.inputs())
    ui_event = run.click(control_ui, inputs=all_inputs, outputs=[image, info, maps],
                         api_visibility="private", **gpu_kwargs())
    gallery_hook(ui_event, image)
    stop.click(stop_handler(studio), None, None,
               api_visibility="private", queue=False)
    for w in units:
        _wire_unit(studio, w)


def _wire_unit(studio: Any, w: UnitWidgets) -> None:
    """Per-unit UI events: input switch, preview, pose re-render (all private)."""

    def switch_source(source: str) -> tuple[Any, Any, Any]:
        return (gr.update(visible=source == "sketch"), gr.update(visible=source == "image"),
                False)

    w.source.change(switch_source, w.source, [w.sketch, w.photo, w.use_preview],
                    api_visibility="private", queue=False)

    def switch_type(ctype: str) -> tuple[Any, Any, Any]:
        pose = ctype == "openpose"
        return gr.update(visible=pose), gr.update(visible=pose), False

    w.type.change(switch_type, w.type, [w.keypoints, w.rerender, w.use_preview],
                  api_visibility="private", queue=False)
    # A changed input makes the preview stale (browser-side: no upload of every stroke).
    for changed in (w.photo.change, w.sketch.input):
        changed(lambda: False, None, w.use_preview, api_visibility="private", queue=False)

    @spaces_gpu
    @user_errors
    def preview(ctype: str, source: str, sketch: Any, photo: str | None, is_map: bool,
                resolution: float) -> tuple[str, str, bool]:
        if source == "sketch":
            image, annotator = _sketch_image(sketch, 0), "scribble"
        else:
            if not photo:
                raise gr.Error("upload a photo or a control map first")
            image, annotator = photo, ctype
        if source == "image" and is_map:
            cmap = load_image(photo, "control map")
            meta: dict[str, Any] = {}
        else:
            cmap, meta = annotate_image(studio, image, annotator, _num(resolution))
        path = studio.outputs.save_aux(cmap, f"preview-{annotator}")
        text = _pretty_json(meta["keypoints"]) if meta.get("keypoints") else gr.update()
        return str(path), text, True

    w.preview_button.click(
        preview, [w.type, w.source, w.sketch, w.photo, w.is_map, w.resolution],
        [w.preview, w.keypoints, w.use_preview], api_visibility="private",
        **gpu_kwargs(),
    )

    @user_errors
    def rerender(keypoints: str) -> tuple[str, bool]:
        cmap = render_pose(studio, keypoints)  # at the JSON's canvas size
        return str(studio.outputs.save_aux(cmap, "pose-edited")), True

    w.rerender.click(rerender, [w.keypoints], [w.preview, w.use_preview],
                     api_visibility="private", **gpu_kwargs())


def _pretty_json(value: Any) -> str:
    """Keypoints (a JSON string or an object) as indented JSON for the code box."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    return json.dumps(value, indent=2)
