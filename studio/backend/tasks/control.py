"""ControlNet generation: up to 3 stacked control units (scribble, openpose, depth, canny).

A unit is a control image plus how to use it: the ControlNet type, its weight (conditioning
scale), the fraction of the denoising schedule where it is active (start/end), whether the
image is a photo to run through the matching annotator first (preprocess) and how the map is
fitted to the output size (A1111's resize modes). The pipeline is the shared base UNet plus
the chosen ControlNets from the registry (diffusers wraps a list in MultiControlNetModel),
optionally img2img from an init image.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image

from ..common import (
    CancelToken,
    ProgressFn,
    StudioError,
    TaskContext,
    configure_pipe,
    cpu_generator,
    effective_steps_guidance,
    run_guarded,
    step_callback,
    text_options,
)
from ..images import load_image
from ..models.modelsets import CONTROL_TYPES
from ..models.registry import ModelRegistry
from ..requests import (
    FAST_STEPS,
    GenerationParams,
    HiresParams,
    InputFn,
    RequestError,
    check_number,
    jsonable,
    loads_json,
)
from .hires import refine, second_request
from .remix import check_references, referenced

MAX_UNITS = 3
MIN_RESOLUTION, MAX_RESOLUTION = 64, 2048
# Each control type's map is made from a photo by the annotator of the same name.
ANNOTATORS = CONTROL_TYPES
# Resize modes, with the names A1111 uses for them (accepted as aliases).
RESIZE_MODES = {"crop": "Crop and Resize", "fit": "Resize and Fill", "stretch": "Just Resize"}
_RESIZE_ALIASES = {v.lower(): k for k, v in RESIZE_MODES.items()}
UNIT_KEYS = ("type", "image", "weight", "start", "end", "preprocess", "resize_mode",
             "resolution", "annotator", "control_mode", "model")
# a unit's ControlNet: "" the type's own, "union" the family's ControlNet Union
UNIT_MODELS = ("", "union")
# How a unit's control weighs against the prompt, as the A1111 ControlNet extension defines it:
# balanced = as given; prompt = "My prompt is more important" (residuals scaled down layer by
# layer, its soft weights 0.825^(n-1-i)); control = "ControlNet is more important" (the soft
# weights, and the control on the conditional half of classifier-free guidance only).
CONTROL_MODES = ("balanced", "prompt", "control")
SOFT_WEIGHT = 0.825
_CONTROL_MODE_ALIASES = {"my prompt is more important": "prompt",
                         "controlnet is more important": "control", 0: "balanced",
                         1: "prompt", 2: "control"}
# Written after a run to say how the stored map was made from the input.
_PREPARED_KEY = "prepared_from"


@dataclass
class ControlUnit:
    """One ControlNet condition. `image` is a control map, or a photo when `preprocess`."""

    type: str = ""
    image: Any = None
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    preprocess: bool = False
    resize_mode: str = "crop"
    resolution: int = 512
    annotator: str | None = None  # None: the type's own annotator
    control_mode: str = "balanced"  # see CONTROL_MODES
    model: str = ""  # see UNIT_MODELS

    def __post_init__(self) -> None:
        self.prepared_from: dict[str, Any] | None = None

    @classmethod
    def parse(cls, value: Any, index: int) -> ControlUnit:
        """Build a unit from a dict (API/JSON form) or pass a unit through."""
        if isinstance(value, ControlUnit):
            return value
        if not isinstance(value, dict):
            raise RequestError(
                f"unit {index} must be an object like "
                '{"type": "canny", "weight": 1, "start": 0, "end": 1, "preprocess": true}, '
                f"got {type(value).__name__}"
            )
        unknown = set(value) - set(UNIT_KEYS) - {_PREPARED_KEY}
        if unknown:
            raise RequestError(
                f"unit {index} has unknown keys: {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(UNIT_KEYS)}"
            )
        unit = cls(**{k: v for k, v in value.items() if k in UNIT_KEYS})
        if isinstance(value.get(_PREPARED_KEY), dict):
            unit.prepared_from = dict(value[_PREPARED_KEY])
        return unit

    @property
    def annotator_name(self) -> str:
        return self.annotator or self.type

    def use_map(self, cmap: Image.Image) -> None:
        """The map as applied (at the output size) replaces the input, so the unit records
        exactly what conditioned the image; how it was made is kept in `prepared_from`."""
        self.prepared_from = {"preprocess": self.preprocess, "resize_mode": self.resize_mode,
                              "annotator": self.annotator}
        self.image, self.preprocess, self.resize_mode, self.annotator = (
            cmap, False, "stretch", None)

    def validate(self, index: int) -> None:
        """Check every field (and decode the image); messages name the unit."""
        name = f"unit {index}"
        if not isinstance(self.type, str) or self.type not in CONTROL_TYPES:
            raise RequestError(
                f"{name}: unknown control type {self.type!r}; choose one of: "
                f"{', '.join(CONTROL_TYPES)}"
            )
        check_number(f"{name} weight", self.weight, 0, 2)
        check_number(f"{name} start", self.start, 0, 1)
        check_number(f"{name} end", self.end, 0, 1)
        if self.start >= self.end:
            raise RequestError(
                f"{name}: start ({self.start:g}) must be smaller than end ({self.end:g}); they "
                "are the fractions of the denoising steps where the unit is active, e.g. 0 and 1"
            )
        if not isinstance(self.preprocess, bool):
            raise RequestError(f"{name}: preprocess must be true or false, got {self.preprocess!r}")
        mode = self.resize_mode
        if isinstance(mode, str):
            mode = _RESIZE_ALIASES.get(mode.strip().lower(), mode.strip().lower())
        if mode not in RESIZE_MODES:
            raise RequestError(
                f"{name}: unknown resize_mode {self.resize_mode!r}; choose one of: "
                + ", ".join(f"{k} ({v})" for k, v in RESIZE_MODES.items())
            )
        check_number(f"{name} resolution", self.resolution, MIN_RESOLUTION, MAX_RESOLUTION,
                     integer=True)
        if self.annotator is not None and self.annotator not in ANNOTATORS:
            raise RequestError(
                f"{name}: unknown annotator {self.annotator!r}; choose one of: "
                f"{', '.join(ANNOTATORS)}"
            )
        control_mode = self.control_mode
        if isinstance(control_mode, str):
            control_mode = control_mode.strip().lower()
        control_mode = _CONTROL_MODE_ALIASES.get(control_mode, control_mode)
        if control_mode not in CONTROL_MODES:
            raise RequestError(
                f"{name}: unknown control_mode {self.control_mode!r}; choose one of: "
                f"{', '.join(CONTROL_MODES)}")
        model = self.model.strip().lower() if isinstance(self.model, str) else self.model
        if model not in UNIT_MODELS:
            raise RequestError(f"{name}: unknown model {self.model!r}; use \"\" (the control "
                               "type's own ControlNet) or \"union\" (ControlNet Union)")
        self.image = load_image(self.image, f"{name} image")
        self.resize_mode, self.control_mode, self.model = mode, control_mode, model
        self.weight, self.start, self.end = float(self.weight), float(self.start), float(self.end)
        self.resolution = int(self.resolution)

    def to_dict(self) -> dict[str, Any]:
        """JSON form. After a run the image is the stored map as used (at output size)."""
        d = {"type": self.type, "weight": self.weight, "start": self.start, "end": self.end,
             "preprocess": self.preprocess, "resize_mode": self.resize_mode,
             "resolution": self.resolution, "annotator": self.annotator,
             "control_mode": self.control_mode, "model": self.model,
             "image": jsonable(self.image)}
        if self.prepared_from is not None:
            d[_PREPARED_KEY] = {k: self.prepared_from.get(k)
                                for k in ("preprocess", "resize_mode", "annotator")}
        return d


@dataclass
class ControlRequest(HiresParams, GenerationParams):
    """ControlNet generation: 1-3 control units, optionally img2img from `init_image`, and
    optionally hires fix (its second pass keeps the units)."""

    units: list[Any] | None = None
    init_image: Any = None
    strength: float = 0.75
    # style/content reference pictures, through IP-Adapter (see tasks.remix.referenced)
    reference_images: list[Any] = field(default_factory=list)
    reference_scale: float = 0.6

    task: ClassVar[str] = "control"

    def validate(self) -> None:
        super().validate()
        units = self.units
        if units is None or (isinstance(units, (list, tuple)) and not units):
            raise RequestError(
                "add at least one control unit (an image and its type); without control, "
                "use txt2img"
            )
        if not isinstance(units, (list, tuple)):
            raise RequestError(f"units must be a list of control units, got {type(units).__name__}")
        if len(units) > MAX_UNITS:
            raise RequestError(f"{len(units)} control units given; at most {MAX_UNITS} can be "
                               "stacked")
        parsed = [ControlUnit.parse(u, i) for i, u in enumerate(units, 1)]
        for i, unit in enumerate(parsed, 1):
            unit.validate(i)
        self.units = parsed
        if self.init_image is not None:
            check_number("strength", self.strength, 0, 1)
            steps = min(self.steps, FAST_STEPS) if self.fast else self.steps
            if int(steps * self.strength) < 1:
                raise RequestError(
                    f"strength {self.strength:g} with {steps} steps runs no denoising step "
                    f"(steps x strength < 1); raise the strength or the steps"
                )
            self.strength = float(self.strength)
            self.init_image = load_image(self.init_image, "init image")
        self.reference_images = check_references(self.reference_images, self.reference_scale)
        self.reference_scale = float(self.reference_scale)

    def work(self) -> float:
        """Each ControlNet costs about half a UNet evaluation; img2img runs strength x steps;
        hires fix adds its second pass (with the ControlNets too)."""
        share = self.strength if self.init_image is not None else 1.0
        first = GenerationParams.work(self) * share * self.second_pass_factor()
        return first + self.hires_work()

    def second_pass_factor(self) -> float:
        return 1 + 0.5 * len(self.units or [])

    def map_inputs(self, fn: InputFn) -> None:
        """Every unit's image (units may still be dicts, as stored), then the init image."""
        units = list(self.units or []) if isinstance(self.units, (list, tuple)) else []
        for i, unit in enumerate(units, 1):
            if isinstance(unit, ControlUnit):
                unit.image = fn(unit.image, f"unit{i}-{unit.type}")
            elif isinstance(unit, dict) and unit.get("image") is not None:
                units[i - 1] = {**unit, "image": fn(unit["image"], f"unit{i}")}
        if units:
            self.units = units
        if self.init_image is not None:
            self.init_image = fn(self.init_image, "init")
        if isinstance(self.reference_images, (list, tuple)):
            self.reference_images = [fn(v, f"reference{i}")
                                     for i, v in enumerate(self.reference_images, 1)]

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["units"] = [u.to_dict() if isinstance(u, ControlUnit) else jsonable(u)
                      for u in (self.units or [])]
        return d


# ---------------------------------------------------------------------- API form
def units_from_api(images: Any, units: Any) -> list[dict[str, Any]]:
    """Join the API's `images` (list of files) and `units` (JSON list aligned with them)."""
    if isinstance(units, str):
        if not units.strip():
            raise RequestError(
                'units is empty: pass a JSON list, one object per image, e.g. '
                '[{"type": "canny", "weight": 1, "start": 0, "end": 1, "preprocess": true}]'
            )
        try:
            units = loads_json(units, "units")
        except json.JSONDecodeError as err:
            raise RequestError(f"units is not valid JSON ({err.msg} at character {err.pos})") \
                from err
    if isinstance(units, dict):
        units = [units]
    if not isinstance(units, list):
        raise RequestError(f"units must be a JSON list of objects, got {type(units).__name__}")
    if images is None:
        images = []
    elif not isinstance(images, (list, tuple)):
        images = [images]
    images = [_file_path(x) for x in images]
    if len(images) != len(units):
        raise RequestError(
            f"units lists {len(units)} unit(s) but {len(images)} image(s) were sent: send one "
            "image per unit, in the same order"
        )
    out = []
    for i, (img, unit) in enumerate(zip(images, units, strict=True), 1):
        if isinstance(unit, dict) and "image" in unit:
            raise RequestError(f"unit {i}: send its image in `images`, not inside `units`")
        out.append({**unit, "image": img} if isinstance(unit, dict) else unit)
    return out


def _file_path(value: Any) -> Any:
    """gradio file values come as paths, or dicts / objects with a `path`."""
    if isinstance(value, dict) and "path" in value:
        return value["path"]
    return getattr(value, "path", value) if not isinstance(value, (str, Path)) else value


# ---------------------------------------------------------------------- maps
def fit_to_size(image: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """Resize to exactly width x height: crop (cover, centre crop), fit (contain, pad black),
    stretch (ignore the aspect ratio)."""
    image = image.convert("RGB")
    iw, ih = image.size
    if (iw, ih) == (width, height):
        return image
    if mode == "stretch":
        return _resize(image, width, height)
    if mode == "crop":
        scale = max(width / iw, height / ih)
        nw, nh = max(width, round(iw * scale)), max(height, round(ih * scale))
        resized = _resize(image, nw, nh)
        left, top = (nw - width) // 2, (nh - height) // 2
        return resized.crop((left, top, left + width, top + height))
    if mode == "fit":
        scale = min(width / iw, height / ih)
        nw, nh = min(width, max(1, round(iw * scale))), min(height, max(1, round(ih * scale)))
        canvas = Image.new("RGB", (width, height), (0, 0, 0))  # black = no condition
        canvas.paste(_resize(image, nw, nh), ((width - nw) // 2, (height - nh) // 2))
        return canvas
    raise ValueError(f"unknown resize mode {mode!r}")


def _resize(image: Image.Image, width: int, height: int) -> Image.Image:
    down = width * height < image.width * image.height
    return image.resize((width, height),
                        Image.Resampling.LANCZOS if down else Image.Resampling.BICUBIC)


def annotate_unit(ctx: TaskContext, unit: ControlUnit) -> tuple[Image.Image, dict[str, Any]]:
    """The unit's control map at annotator resolution (the image itself without preprocess)."""
    if not unit.preprocess:
        return unit.image, {}
    try:
        service = ctx.annotators
    except ImportError as err:
        raise StudioError(
            "the annotators are not available in this installation; upload a ready control "
            "map instead and set preprocess to false"
        ) from err
    result, info = service.annotate(unit.image, unit.annotator_name, resolution=unit.resolution)
    return load_image(result, f"{unit.annotator_name} map"), dict(info or {})


def annotate_image(ctx: TaskContext, image: Any, annotator: str, resolution: Any = 512
                   ) -> tuple[Image.Image, dict[str, Any]]:
    """Preview: run one annotator on an image (the /annotate endpoint and the UI preview)."""
    if not isinstance(annotator, str) or annotator not in ANNOTATORS:
        raise RequestError(
            f"unknown annotator {annotator!r}; choose one of: {', '.join(ANNOTATORS)}"
        )
    check_number("resolution", resolution, MIN_RESOLUTION, MAX_RESOLUTION, integer=True)
    unit = ControlUnit(type=annotator, image=image, preprocess=True,
                       resolution=int(resolution), annotator=annotator)
    unit.image = load_image(image, "image")
    cmap, info = annotate_unit(ctx, unit)
    return cmap, _jsonable(info)


def render_pose(ctx: TaskContext, keypoints: Any, width: Any = None, height: Any = None
                ) -> Image.Image:
    """Draw (edited) OpenPose keypoints as a control map.

    The size defaults to the JSON's canvas_width x canvas_height (what the openpose annotator
    writes), else 512 x 512.
    """
    data = _pose_data(keypoints)
    if width is None and height is None:
        pixels = _checked_pose(ctx, data)
        width, height = pixels["canvas_width"], pixels["canvas_height"]
    check_number("width", width, 8, MAX_RESOLUTION * 4, integer=True)
    check_number("height", height, 8, MAX_RESOLUTION * 4, integer=True)
    try:
        drawn = ctx.annotators.draw_pose(data, int(width), int(height))
    except ValueError as err:  # the annotators' AnnotatorInputError: a message to show
        raise RequestError(str(err)) from err
    return load_image(drawn, "pose")


def edit_pose(ctx: TaskContext, keypoints: Any) -> tuple[Image.Image, dict[str, Any]]:
    """The pose editor's keypoints (pixels, or normalised as the A1111 editor may write them)
    -> (their map at the JSON's canvas size, the same pose as canonical pixel JSON)."""
    pixels = _checked_pose(ctx, _pose_data(keypoints))
    return render_pose(ctx, pixels), pixels


def _checked_pose(ctx: TaskContext, data: Any) -> dict[str, Any]:
    """OpenPose JSON checked and in pixels (a 512 x 512 canvas when it names none)."""
    try:
        return ctx.annotators.pose_json(data, (512, 512))
    except ValueError as err:
        raise RequestError(str(err)) from err


def _pose_data(keypoints: Any) -> Any:
    """Keypoints JSON text (or an already parsed object) as an object."""
    if not isinstance(keypoints, str):
        return keypoints
    if not keypoints.strip():
        raise RequestError("keypoints are empty: preview a photo with openpose first, add a "
                           "person in the pose editor, or paste keypoints JSON")
    try:
        return loads_json(keypoints, "keypoints")
    except json.JSONDecodeError as err:
        raise RequestError(
            f"keypoints are not valid JSON ({err.msg} at line {err.lineno}, column "
            f"{err.colno})"
        ) from err


def prepare_maps(ctx: TaskContext, req: ControlRequest) -> tuple[list[Image.Image], list[dict]]:
    """Annotate (where asked) and fit every unit's map to the output size."""
    maps, infos = [], []
    for unit in req.units or []:
        cmap, info = annotate_unit(ctx, unit)
        maps.append(fit_to_size(cmap, req.width, req.height, unit.resize_mode))
        infos.append(_jsonable(info))
    return maps, infos


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(info, default=str))


# ---------------------------------------------------------------------- pipeline
def control_pipeline(registry: ModelRegistry, types: tuple[str, ...], img2img: bool,
                     union: bool = False) -> Any:
    """The family's ControlNet (img2img) pipeline: shared base UNet/VAE/text encoder + the
    chosen ControlNets, or ControlNet Union once per unit (one model, told each unit's type
    by its mode; diffusers stacks the copies as it stacks ControlNets)."""
    kind = ("control_union" if union else "control") + ("_img2img" if img2img else "")
    nets = (("controlnet_union",) * len(types) if union
            else tuple(f"controlnet:{t}" for t in types))
    return registry.family.pipeline(registry, kind, controlnets=nets)


def soft_weights(count: int) -> list[float]:
    """The extension's per-residual scales for "My prompt is more important": 1 at the middle
    block (the last residual), 0.825 less per layer towards the input."""
    return [SOFT_WEIGHT ** (count - 1 - i) for i in range(count)]


@contextlib.contextmanager
def control_modes(pipe: Any, units: list[ControlUnit]) -> Iterator[None]:
    """Apply each unit's control mode to its ControlNet's residuals for one call (forward
    hooks, removed afterwards; the ControlNets are shared and the device lock keeps calls
    apart). A ControlNet serving two units must have one mode for both."""
    nets = list(getattr(pipe.controlnet, "nets", [pipe.controlnet]))
    modes: dict[int, tuple[Any, str]] = {}
    for i, (net, unit) in enumerate(zip(nets, units, strict=True), 1):
        known = modes.setdefault(id(net), (net, unit.control_mode))
        if known[1] != unit.control_mode:
            which = "ControlNet Union" if unit.model == "union" else f"{unit.type} ControlNet"
            raise RequestError(
                f"unit {i} uses the same {which} as an earlier unit with another control "
                f"mode ({known[1]}); give them one control mode")

    def hook(mode: str) -> Callable[..., Any]:
        def scaled(module: Any, args: Any, output: Any) -> Any:
            down, mid = output
            weights = soft_weights(len(down) + 1)
            down = [d * w for d, w in zip(down, weights, strict=False)]
            if mode == "control" and pipe.do_classifier_free_guidance:
                # the batch is [unconditional, conditional]: no control on the first half
                keep = torch.ones(mid.shape[0], device=mid.device, dtype=mid.dtype)
                keep[: mid.shape[0] // 2] = 0
                down = [d * keep.view(-1, 1, 1, 1) for d in down]
                mid = mid * keep.view(-1, 1, 1, 1)
            return down, mid

        return scaled

    handles = [net.register_forward_hook(hook(mode)) for net, mode in modes.values()
               if mode != "balanced"]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_control(
    registry: ModelRegistry,
    req: ControlRequest,
    maps: list[Image.Image],
    init: Image.Image | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    adapters: dict[str, float] | None = None,
    latents: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Generate with prepared maps (each exactly width x height); returns (PIL, info), or
    the undecoded latents with `latents` (hires fix's `latent`)."""
    units: list[ControlUnit] = list(req.units or [])
    union = any(u.model == "union" for u in units)
    pipe = control_pipeline(registry, tuple(u.type for u in units), init is not None, union)
    configure_pipe(registry, pipe, req, "unet", adapters)
    steps, guidance = effective_steps_guidance(req)
    multi = len(units) > 1

    def per_unit(values: list[Any]) -> Any:
        return values if multi else values[0]

    kwargs: dict[str, Any] = dict(
        prompt=req.prompt,
        negative_prompt=req.negative_prompt or None,
        **text_options(pipe, req),
        num_inference_steps=steps,
        guidance_scale=guidance,
        width=req.width,
        height=req.height,
        controlnet_conditioning_scale=per_unit([u.weight for u in units]),
        control_guidance_start=per_unit([u.start for u in units]),
        control_guidance_end=per_unit([u.end for u in units]),
        generator=cpu_generator(req.seed),
        **({"output_type": "latent"} if latents else {}),
    )
    if union:  # each copy of the union model gets its unit's map and mode (in this order)
        kwargs.update(control_image=list(maps),
                      control_mode=[registry.family.union_modes[u.type] for u in units])
    if init is None:
        total = steps
        if not union:
            kwargs["image"] = per_unit(maps)
    else:
        total = min(int(steps * req.strength), steps)
        kwargs.update(image=init, strength=req.strength)
        if not union:
            kwargs["control_image"] = per_unit(maps)
    kwargs["callback_on_step_end"] = step_callback(total, progress, cancel)
    with referenced(registry, pipe.unet, list(req.reference_images or []),
                    req.reference_scale, guidance) as reference:
        with control_modes(pipe, units):
            out = run_guarded(registry, lambda: pipe(**kwargs, **reference), cancel)
    info: dict[str, Any] = {"steps_run": total, "guidance_run": guidance}
    if req.reference_images:
        info["references"] = len(req.reference_images)
    return out.images[0], info


def check_models(ctx: TaskContext, units: list[ControlUnit]) -> None:
    """Refuse, before anything loads, a unit whose ControlNet the models lack, and a mix of
    ControlNet Union and per-type ControlNets (diffusers runs one kind per image)."""
    available = ctx.model_set.controlnets
    modes = ctx.registry.family.union_modes if ctx.model_set.get("controlnet_union") else {}
    for i, unit in enumerate(units, 1):
        if unit.model == "union":
            if not modes:
                raise RequestError(
                    f"unit {i}: the {ctx.model_set.name} models have no ControlNet Union; "
                    "leave the unit's model empty (its control type's own ControlNet)")
            if unit.type not in modes:
                raise RequestError(f"unit {i}: ControlNet Union has no {unit.type} mode; it "
                                   f"takes: {', '.join(sorted(modes))}")
        elif unit.type not in available:
            hint = ' (or model "union": ControlNet Union)' if unit.type in modes else ""
            raise RequestError(
                f"unit {i}: the {ctx.model_set.name} models have no {unit.type} ControlNet; "
                f"use one of: {', '.join(sorted(available))}{hint}")
    if len({u.model == "union" for u in units}) > 1:
        raise RequestError(
            "ControlNet Union and per-type ControlNets cannot steer one image together (one "
            'kind per pipeline): give every unit model "union", or none')


def _controlled_second_pass(ctx: TaskContext, maps: list[Image.Image],
                            cancel: CancelToken | None) -> Callable[..., Image.Image]:
    """Hires fix's second pass for Control: ControlNet img2img with the same units, their
    maps resized to the final size."""

    def second_pass(req: ControlRequest, init: Any, progress: ProgressFn | None
                    ) -> Image.Image:
        second = second_request(req)
        second.strength = req.hires_denoise
        size = (second.width, second.height)
        resized = [cmap.resize(size, Image.Resampling.LANCZOS) for cmap in maps]
        image, _ = run_control(ctx.registry, second, resized, init, progress, cancel)
        return image

    return second_pass


def control_runner(ctx: TaskContext, req: ControlRequest, progress: ProgressFn | None,
                   cancel: CancelToken | None) -> tuple[Any, dict[str, Any]]:
    """Studio task runner: annotate and fit the maps, generate, record the maps as used."""
    check_models(ctx, list(req.units or []))
    maps, annotations = prepare_maps(ctx, req)
    init = None
    if req.init_image is not None:
        init = fit_to_size(req.init_image, req.width, req.height, "crop")
    image, info = run_control(ctx.registry, req, maps, init, progress, cancel,
                              latents=req.latent_upscale)
    if req.hires:
        image, hires = refine(ctx, req, image, info["steps_run"], progress, cancel,
                              second_pass=_controlled_second_pass(ctx, maps, cancel))
        info.update(hires)
    for unit, cmap in zip(req.units or [], maps, strict=True):
        unit.use_map(cmap)
    req.init_image = init
    req.record_inputs(ctx.outputs.record_input)
    info.update(control_maps=[u.image for u in req.units or []], annotations=annotations,
                extra_images=maps, init_image=req.init_image)
    return image, info
