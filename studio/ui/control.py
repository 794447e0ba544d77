"""Control tab: a sketch or a photo -> control map (preview, fix a pose) -> ControlNet image.

Named API (both on the GPU queue):
- `/control`: common parameters + `images` (files) + `units` (JSON list aligned with images)
  + optional `init_image` and `strength`; returns [image, info].
- `/annotate`: `image`, `annotator`, `resolution`; returns [control_map, info] (info holds
  "keypoints" for openpose).
The tab's own Generate button runs a private event that turns the unit widgets into the same
request as the API. An openpose unit's keypoints show twice, as the drag-to-edit pose editor
(`pose_editor.py`) and as JSON text; an edit in either redraws the unit's preview.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
from PIL import Image

from studio.backend.images import load_image
from studio.backend.models.modelsets import CONTROL_TYPES
from studio.backend.tasks.control import (
    ANNOTATORS,
    MAX_UNITS,
    RESIZE_MODES,
    edit_pose,
    units_from_api,
)

from .common import (
    PRIVATE,
    GenerationTab,
    file_paths,
    gpu_kwargs,
    hires_params,
    info_json,
    path_and_info,
    request_values,
    spaces_gpu,
    user_errors,
    whole_number,
)
from .pose_editor import compact_json, pose_editor, pose_text
from .sendto import register_target

DEFAULT_TYPES = ("scribble", "openpose", "depth")
CANVAS = (512, 512)
RESIZE_CHOICES = [(f"{label} ({key})", key) for key, label in RESIZE_MODES.items()]


def _blank_canvas() -> dict[str, Any]:
    """A white sketch canvas (dark strokes on white; the scribble annotator inverts them)."""
    return {"background": Image.new("RGB", CANVAS, "white"), "layers": [], "composite": None}


class UnitWidgets:
    """The widgets of one control unit (built inside its accordion)."""

    def __init__(self, index: int, types: tuple[str, ...] = CONTROL_TYPES,
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
            # one model for every type (SDXL's); every enabled unit must agree
            self.union = gr.Checkbox(label="ControlNet Union", value=False,
                                     info="one model for every type (SDXL)",
                                     elem_id=f"{eid}-union")
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
        # drag-to-edit view of the keypoints below (same JSON; edits re-render the preview)
        self.pose_editor = pose_editor(f"{eid}-pose-editor", visible=openpose)
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
            "resolution": whole_number(v[self.resolution]),
            "model": "union" if v[self.union] else "",
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
        return [self.enabled, self.type, self.source, self.union, self.sketch, self.photo,
                self.is_map, self.resolution, self.resize_mode, self.weight, self.start,
                self.end, self.preview, self.use_preview]


def _sketch_image(value: Any, index: int) -> Any:
    if not isinstance(value, dict):
        return value
    image = value.get("composite") or value.get("background")
    if image is None:
        raise gr.Error(f"unit {index}: the sketch is empty; draw something first")
    return image


def control_request(data: dict[str, Any]) -> dict[str, Any]:
    """The API's values as a control request: `images` and `units` joined into units."""
    data = dict(data)
    units = units_from_api(data.pop("images"), data.pop("units"))
    if "reference_images" in data:
        data["reference_images"] = file_paths(data["reference_images"])
    return {**data, "units": units, "init_image": data.get("init_image") or None}


def ui_request(values: dict[Any, Any], params: dict[str, Any], units: list[UnitWidgets],
               extra: dict[str, Any], hires: dict[str, Any] | None = None) -> dict[str, Any]:
    """The tab's widget values as the same request the API builds (`extra`: the init
    image, strength, reference pictures and their scale widgets, by parameter name;
    `hires`: hires fix's widgets)."""
    params = {**params, **(hires or {})}
    data = request_values(list(params), [values[c] for c in params.values()])
    unit_list = [u for i, w in enumerate(units, 1) if (u := w.unit(values, i)) is not None]
    if not unit_list:
        raise gr.Error("enable at least one control unit (or use the Text to image tab)")
    return {**data, "units": unit_list, "init_image": values[extra["init_image"]] or None,
            "strength": whole_number(values[extra["strength"]]),
            "reference_images": file_paths(values[extra["reference_images"]]),
            "reference_scale": values[extra["reference_scale"]]}


def annotate_handler(studio: Any) -> Any:
    """The `/annotate` endpoint's handler."""

    def annotate(image: str, annotator: str, resolution: float = 512) -> tuple[str, str]:
        """Run an annotator (canny, depth, openpose, scribble) on an image.
        Returns [control_map, info JSON] (info has "keypoints" for openpose)."""
        cmap, meta = studio.annotate(image, annotator, whole_number(resolution))
        path = studio.outputs.save_aux(cmap, f"annotate-{annotator}")
        full = {"annotator": annotator, "resolution": whole_number(resolution),
                "width": cmap.width, "height": cmap.height,
                "file": studio.outputs.name_of(path), **meta}
        return str(path), info_json(full)

    return spaces_gpu(user_errors(annotate))


def build(studio: Any, gallery_hook: Any) -> None:
    """Build the tab inside the current Blocks context."""
    tab = GenerationTab(studio, "control", gallery_hook, prefix="control")
    units: list[UnitWidgets] = []
    # Only the control types the model set has a ControlNet for (the toy world: two).
    types = tuple(t for t in CONTROL_TYPES if t in studio.model_set.controlnets) or CONTROL_TYPES
    with gr.Row():
        with gr.Column(scale=1):
            params = tab.params(prompt_placeholder="a knight on a horse, oil painting")
            for i in range(MAX_UNITS):
                with gr.Accordion(f"Control unit {i + 1}", open=i == 0,
                                  elem_id=f"control-unit{i + 1}"):
                    units.append(UnitWidgets(i, types, studio.native_size))
            with gr.Accordion("Init image (img2img with control)", open=False) as init_box:
                init_image = gr.Image(label="Init image (optional)", type="filepath",
                                      elem_id="control-init-image")
                strength = gr.Slider(0.05, 1, value=0.75, step=0.05, label="Denoising strength")
            with gr.Accordion("Reference pictures (style/content, IP-Adapter)", open=False):
                references = gr.File(label="1-4 pictures (optional)", file_count="multiple",
                                     file_types=["image"], value=None,
                                     elem_id="control-reference-images")
                reference_scale = gr.Slider(0, 1.5, value=0.6, step=0.05,
                                            label="Reference strength")
            hires = hires_params(studio, "control")
            run, _ = tab.buttons()
        with gr.Column(scale=1):
            tab.results()
            maps = gr.Gallery(fit_columns=False, label="Control maps used", columns=3,
                              height=200, elem_id="control-maps")
    api = _api_inputs()
    tab.wire(api["control"].click,
             {**params, "images": api["images"], "units": api["units"],
              "init_image": api["init_image"], "strength": strength,
              "reference_images": api["reference_images"], "reference_scale": reference_scale},
             api_name="control", to_request=control_request,
             optional=("init_image", "reference_images", "reference_scale"), trailing=hires,
             doc="Generate with 1-3 control units. `units` is a JSON list aligned with "
                 "`images`: {\"type\", \"weight\", \"start\", \"end\", \"preprocess\"} "
                 "(+ \"resize_mode\", \"resolution\"). Returns [image, info JSON with seed, "
                 "file and control map file names].")
    api["annotate"].click(
        annotate_handler(studio),
        inputs=[api["ann_image"], api["ann_name"], api["ann_resolution"]],
        outputs=[api["ann_map"], api["ann_info"]], api_name="annotate", **gpu_kwargs())
    extra = {"init_image": init_image, "strength": strength, "reference_images": references,
             "reference_scale": reference_scale}
    all_inputs = {*params.values(), *extra.values(), *hires.values()}
    for w in units:
        all_inputs.update(w.inputs())
    tab.wire(run.click, all_inputs, extra_outputs=[maps],
             to_request=lambda v: ui_request(v, params, units, extra, hires),
             outputs=lambda r: (*path_and_info(r), list(r.extra_images)),
             doc="The tab's Generate: its unit widgets as a control request.")
    for w in units:
        _wire_unit(studio, w)
    first = units[0]
    register_target("Control (unit 1)", "control",
                    [first.enabled, first.source, first.photo, first.is_map],
                    lambda path: [True, "image", path, False])
    register_target("Control (init image)", "control", [init_image, init_box],
                    lambda path: [path, gr.Accordion(open=True)])


def _api_inputs() -> dict[str, Any]:
    """Inputs and outputs of the headless endpoints (not shown in the UI)."""
    a: dict[str, Any] = {}
    with gr.Group(visible=False):
        a["images"] = gr.File(label="images", file_count="multiple")
        a["units"] = gr.Textbox(label="units", value="[]")
        # Files, not gr.Image: a non-image upload then gets our clear message, not gradio's.
        a["init_image"] = gr.File(label="init_image", file_count="single")
        a["reference_images"] = gr.File(label="reference_images", file_count="multiple")
        a["control"] = gr.Button("control")
        a["ann_image"] = gr.File(label="image", file_count="single")
        a["ann_name"] = gr.Dropdown(list(ANNOTATORS), value="canny", label="annotator")
        a["ann_resolution"] = gr.Number(label="resolution", value=512, precision=0)
        a["ann_map"] = gr.Image(label="control_map", type="filepath", format="png")
        a["ann_info"] = gr.Code(label="info", language="json")
        a["annotate"] = gr.Button("annotate")
    return a


def _wire_unit(studio: Any, w: UnitWidgets) -> None:
    """Per-unit UI events: input switch, preview, pose re-render (all private)."""

    def switch_source(source: str) -> tuple[Any, Any, Any]:
        return (gr.update(visible=source == "sketch"), gr.update(visible=source == "image"),
                False)

    w.source.change(switch_source, w.source, [w.sketch, w.photo, w.use_preview],
                    **PRIVATE, queue=False)

    def switch_type(ctype: str) -> tuple[Any, Any, Any, Any]:
        pose = ctype == "openpose"
        return (gr.update(visible=pose), gr.update(visible=pose), gr.update(visible=pose),
                False)

    w.type.change(switch_type, w.type, [w.keypoints, w.rerender, w.pose_editor, w.use_preview],
                  **PRIVATE, queue=False)
    # A changed input makes the preview stale (browser-side: no upload of every stroke).
    for changed in (w.photo.change, w.sketch.input):
        changed(lambda: False, None, w.use_preview, **PRIVATE, queue=False)

    @spaces_gpu
    @user_errors
    def preview(ctype: str, source: str, sketch: Any, photo: str | None, is_map: bool,
                resolution: float) -> tuple[str, Any, Any, bool]:
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
            cmap, meta = studio.annotate(image, annotator, whole_number(resolution))
        path = studio.outputs.save_aux(cmap, f"preview-{annotator}")
        pose = meta.get("keypoints")
        if not pose:
            return str(path), gr.update(), gr.update(), True
        return str(path), _pretty_json(pose), compact_json(pose), True

    w.preview_button.click(
        preview, [w.type, w.source, w.sketch, w.photo, w.is_map, w.resolution],
        [w.preview, w.keypoints, w.pose_editor, w.use_preview], **PRIVATE,
        **gpu_kwargs(),
    )
    _wire_pose_edits(studio, w)


def _wire_pose_edits(studio: Any, w: UnitWidgets) -> None:
    """The JSON box's Re-render and the pose editor's edits: both draw the keypoints as the
    unit's preview and put the same pose, in pixels, in the other view."""

    @user_errors
    def rerender(keypoints: str) -> tuple[str, bool, str, str]:
        cmap, pose = edit_pose(studio, keypoints)  # at the JSON's canvas size
        path = studio.outputs.save_aux(cmap, "pose-edited")
        return str(path), True, _pretty_json(pose), compact_json(pose)

    outputs = [w.preview, w.use_preview, w.keypoints, w.pose_editor]
    w.rerender.click(rerender, [w.keypoints], outputs, **PRIVATE, **gpu_kwargs())
    # drawing needs no device: edits do not wait for a running generation
    w.pose_editor.input(rerender, [w.pose_editor], outputs, **PRIVATE,
                        concurrency_limit=4, trigger_mode="always_last")


def _pretty_json(value: Any) -> str:
    """Keypoints (a JSON string or an object) as indented JSON for the code box."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    return pose_text(value) if isinstance(value, dict) else json.dumps(value, indent=2)
