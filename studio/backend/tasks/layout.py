"""Box layouts with GLIGEN: objects described by phrases appear inside boxes the user draws.

GLIGEN (Li et al. 2023) feeds grounding tokens (a phrase's text embedding + its box through
an MLP) into gated self-attention layers of the UNet. Scheduled sampling: grounding is used for
the first `gligen_fraction` of the steps only (`gligen_scheduled_sampling_beta`), plain SD
refines the rest. At most 30 boxes.

Two modes, each with its own GLIGEN UNet from the registry (text encoder, tokenizer and VAE
are the shared base components):
- "generate" (role "unet_gligen"): text + boxes -> a new image of `width` x `height`.
- "inside_boxes" (role "unet_gligen_inpaint", 9 input channels): regenerate only inside the
  boxes of a reference `image`. The GLIGEN inpainting pipeline works on a square of the VAE's
  native size (512 for SD1.5): the reference is resized to it (normalised boxes stay valid),
  the result is resized back to the reference's size and the reference's own pixels are pasted
  back outside every box, so those are bit-exact. `width`/`height` are not used in this mode:
  the output has the reference image's size.

Boxes are normalised `[x0, y0, x1, y1]` (fractions of the image width and height, x0 < x1,
y0 < y1), each with a phrase: `[{"phrase": "a red bird", "box": [0.1, 0.2, 0.45, 0.6]}]`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from ..common import (
    CancelToken,
    ProgressFn,
    StudioError,
    TaskContext,
    base_pipeline,
    configure_pipe,
    cpu_generator,
    effective_steps_guidance,
    new_scheduler,
    run_guarded,
    text_options,
)
from ..images import load_image
from ..models.modelsets import GLIGEN_FRACTION
from ..models.registry import ModelRegistry
from ..previews import show as show_preview
from ..requests import (
    ExciteParams,
    GenerationParams,
    HiresParams,
    RequestError,
    check_number,
    loads_json,
)
from ..steering.excite import excitation_for, excited
from .hires import refine

MAX_BOXES = 30  # GLIGEN's position net has 30 grounding slots
MAX_PHRASE_CHARS = 300
MODES = ("generate", "inside_boxes")
UNET_ROLES = {"generate": "unet_gligen", "inside_boxes": "unet_gligen_inpaint"}
# GLIGEN inpainting UNet input: noisy latent (4) + masked reference latent (4) + box mask (1)
UNET_CHANNELS = {"generate": 4, "inside_boxes": 9}
BOXES_EXAMPLE = '[{"phrase": "a red bird", "box": [0.1, 0.2, 0.45, 0.6]}]'


# ---------------------------------------------------------------------------------- boxes
def parse_boxes(value: Any) -> list[dict[str, Any]]:
    """Check boxes given as a list (or JSON string) of `{"phrase": str, "box": [x0, y0, x1, y1]}`.

    Returns clean copies (phrases stripped, coordinates as floats); raises RequestError saying
    which box is wrong and how to fix it. An empty string or None is an empty list.
    """
    items: Any = value
    if value is None:
        items = []
    elif isinstance(value, str):
        text = value.strip()
        try:
            items = loads_json(text, "boxes") if text else []
        except json.JSONDecodeError as err:
            raise RequestError(
                f"boxes is not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); "
                f"expected a list like {BOXES_EXAMPLE}"
            ) from None
    if isinstance(items, Mapping):
        raise RequestError(f"boxes must be a list of boxes, got a single object; wrap it in [ ]: "
                           f"{BOXES_EXAMPLE}")
    if not isinstance(items, (list, tuple)):
        raise RequestError(
            f"boxes must be a list like {BOXES_EXAMPLE}, got {type(items).__name__}"
        )
    if len(items) > MAX_BOXES:
        raise RequestError(
            f"{len(items)} boxes given; GLIGEN grounds at most {MAX_BOXES} objects. "
            "Remove or merge some boxes."
        )
    return [_parse_box(i, item) for i, item in enumerate(items, 1)]


def _parse_box(i: int, item: Any) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise RequestError(
            f"box {i} must be an object like {{\"phrase\": \"a red bird\", \"box\": "
            f"[0.1, 0.2, 0.45, 0.6]}}, got {type(item).__name__} {item!r}"
        )
    unknown = sorted(set(item) - {"phrase", "box"})
    if unknown:
        raise RequestError(
            f"box {i} has unknown keys {', '.join(map(repr, unknown))}; each box has exactly "
            "\"phrase\" and \"box\""
        )
    if "box" not in item:
        raise RequestError(f"box {i} has no \"box\": give its corners as [x0, y0, x1, y1]")
    phrase = item.get("phrase", "")
    if not isinstance(phrase, str):
        raise RequestError(f"box {i}: the phrase must be text, got {type(phrase).__name__}")
    if not phrase.strip():
        raise RequestError(
            f"box {i} has an empty phrase: say what should appear in it (e.g. \"a red bird\")"
        )
    if len(phrase) > MAX_PHRASE_CHARS:
        raise RequestError(
            f"the phrase of box {i} is {len(phrase)} characters long; the limit is "
            f"{MAX_PHRASE_CHARS}. A few words describing the object work best."
        )
    coords = item["box"]
    if not isinstance(coords, (list, tuple)) or len(coords) != 4:
        raise RequestError(f"box {i} must be 4 numbers [x0, y0, x1, y1], got {coords!r}")
    for name, v in zip(("x0", "y0", "x1", "y1"), coords, strict=True):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise RequestError(f"box {i}: {name} must be a finite number, got {v!r}")
    x0, y0, x1, y1 = (float(v) for v in coords)
    if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
        raise RequestError(
            f"box {i} {list(coords)} has coordinates outside [0, 1]: boxes are normalised "
            "(pixel x / image width, pixel y / image height)"
        )
    if x1 <= x0:
        raise RequestError(
            f"box {i} has x1 <= x0 ({x1:g} <= {x0:g}): give it as [x0, y0, x1, y1] with the "
            "left edge x0 smaller than the right edge x1"
        )
    if y1 <= y0:
        raise RequestError(
            f"box {i} has y1 <= y0 ({y1:g} <= {y0:g}): give it as [x0, y0, x1, y1] with the "
            "top edge y0 smaller than the bottom edge y1"
        )
    return {"phrase": phrase.strip(), "box": [x0, y0, x1, y1]}


def boxes_from_pixels(
    pixel_boxes: Iterable[Mapping[str, Any]], width: int, height: int
) -> list[dict[str, Any]]:
    """Pixel boxes drawn on a `width` x `height` canvas -> normalised `{"phrase", "box"}` boxes.

    Each pixel box has `xmin, ymin, xmax, ymax` (the `image_annotator` layout) and its phrase
    under "label" (or "phrase"). Coordinates are clipped to the canvas and rounded to 4
    decimals (well below a pixel); everything else is left to `parse_boxes` to check.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"canvas size must be positive, got {width}x{height}")

    def norm(v: Any, side: int) -> float:
        return round(min(max(float(v), 0.0), float(side)) / side, 4)

    out = []
    for b in pixel_boxes:
        phrase = b.get("label", b.get("phrase", "")) or ""
        out.append({
            "phrase": str(phrase).strip(),
            "box": [norm(b["xmin"], width), norm(b["ymin"], height),
                    norm(b["xmax"], width), norm(b["ymax"], height)],
        })
    return out


def boxes_to_pixels(boxes: Iterable[Mapping[str, Any]], width: int, height: int
                    ) -> list[dict[str, Any]]:
    """Normalised boxes -> `image_annotator` pixel boxes on a `width` x `height` canvas."""
    out = []
    for b in boxes:
        x0, y0, x1, y1 = b["box"]
        out.append({"xmin": round(x0 * width), "ymin": round(y0 * height),
                    "xmax": round(x1 * width), "ymax": round(y1 * height),
                    "label": b.get("phrase", "")})
    return out


def box_mask(boxes: Iterable[Mapping[str, Any]], size: tuple[int, int]) -> Image.Image:
    """An "L" mask of `size` (width, height): 255 on every pixel a box touches, 0 elsewhere."""
    width, height = size
    mask = np.zeros((height, width), dtype=np.uint8)
    for b in boxes:
        x0, y0, x1, y1 = b["box"]
        left, top = math.floor(x0 * width), math.floor(y0 * height)
        right, bottom = math.ceil(x1 * width), math.ceil(y1 * height)
        mask[top:bottom, left:right] = 255
    return Image.fromarray(mask, mode="L")


def prompt_with_phrases(prompt: str, phrases: Iterable[str]) -> str:
    """The prompt with every phrase it does not already contain appended (", "-separated)."""
    extra = [p for p in dict.fromkeys(phrases) if p.lower() not in prompt.lower()]
    return ", ".join([prompt.strip(), *extra]) if prompt.strip() else ", ".join(extra)


# ---------------------------------------------------------------------------------- request
@dataclass
class LayoutRequest(HiresParams, ExciteParams, GenerationParams):
    """Generate with objects in boxes (GLIGEN), or regenerate inside the boxes of `image`.

    `boxes` is a list (or JSON string) of `{"phrase", "box": [x0, y0, x1, y1]}` normalised to
    [0, 1]; after `validate()` it is the checked list. `gligen_fraction` is the fraction of the
    steps that use the boxes (scheduled sampling). `mode` is "generate" or "inside_boxes" (the
    latter needs `image`; after `validate()` it holds the checked RGB PIL image, recorded
    next to the outputs by the runner). `append_phrases` appends the phrases the prompt does
    not mention yet. Hires fix's second pass is plain img2img, without the boxes.
    """

    boxes: Any = field(default_factory=list)
    gligen_fraction: float = GLIGEN_FRACTION
    mode: str = "generate"
    image: Any = None
    append_phrases: bool = False

    task: ClassVar[str] = "layout"
    image_fields: ClassVar[tuple[str, ...]] = ("image",)

    def validate(self) -> None:
        super().validate()
        check_number("gligen_fraction", self.gligen_fraction, 0, 1)
        self.gligen_fraction = float(self.gligen_fraction)
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise RequestError(
                f"unknown layout mode {self.mode!r}; choose \"generate\" (a new image with "
                "objects in the boxes) or \"inside_boxes\" (regenerate inside the boxes of an "
                "image)"
            )
        if not isinstance(self.append_phrases, bool):
            raise RequestError(f"append_phrases must be true or false, got {self.append_phrases!r}")
        self.boxes = parse_boxes(self.boxes)
        if not self.boxes:
            raise RequestError(
                "no boxes: draw at least one box and label it with a phrase, e.g. "
                f"{BOXES_EXAMPLE} (for a prompt alone use txt2img)"
            )
        if self.mode == "generate":
            if self.image is not None:
                raise RequestError(
                    "an image was given but mode is \"generate\", which ignores it; use mode "
                    "\"inside_boxes\" to regenerate inside the boxes of that image, or drop it"
                )
            return
        if self.hires:
            raise RequestError(
                "hires fix works with mode \"generate\"; \"inside_boxes\" keeps the image's "
                "own size and pixels: set hires_scale 1 (and enlarge the result with /upscale)")
        if self.image is None:
            raise RequestError(
                "mode \"inside_boxes\" needs the image to regenerate inside: upload it (or use "
                "mode \"generate\" for a new image)"
            )
        self.image = load_image(self.image, "image")


# ---------------------------------------------------------------------------------- pipeline
class _DropDeprecationNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "has been deprecated" not in record.getMessage()


@contextlib.contextmanager
def _quiet_gligen() -> Iterator[None]:
    """Silence diffusers' notices that the (working, shipped) GLIGEN pipeline is deprecated."""
    notice = _DropDeprecationNotice()
    pipeline_log = logging.getLogger("diffusers.pipelines.pipeline_utils")
    pipeline_log.addFilter(notice)
    try:
        with warnings.catch_warnings():
            # e.g. "Accessing config attribute `sample_size` directly via 'AutoencoderKL'"
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        pipeline_log.removeFilter(notice)


def layout_pipeline(registry: ModelRegistry, mode: str = "generate") -> Any:
    """The family's GLIGEN pipeline on the shared VAE/text encoder + the mode's GLIGEN UNet."""
    role = UNET_ROLES[mode]
    with _quiet_gligen():
        pipe = registry.family.pipeline(registry, "gligen", role)
    source = registry.model_set.source(role)
    example = registry.family.model_set.source(role)  # the family's reference GLIGEN UNet
    if getattr(pipe.unet, "position_net", None) is None:
        raise StudioError(
            f"the UNet '{source}' is not a GLIGEN UNet (it has no grounding layers); box layouts "
            f"need e.g. {example}."
        )
    channels, need = pipe.unet.config.in_channels, UNET_CHANNELS[mode]
    if channels != need:
        kind = "inpainting" if mode == "inside_boxes" else "generation"
        raise StudioError(
            f"the GLIGEN UNet '{source}' has {channels} input channels; GLIGEN {kind} needs "
            f"{need} (e.g. {example})."
        )
    return pipe


@contextlib.contextmanager
def _seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """The GLIGEN inpainting pipeline draws noise without our generator (VAE sampling, the
    re-noised reference at each step): seed the global RNG for the call, then restore it."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def _check_phrase_tokens(tokenizer: Any, phrases: list[str]) -> None:
    limit = int(getattr(tokenizer, "model_max_length", 77))
    for i, phrase in enumerate(phrases, 1):
        n = len(tokenizer(phrase).input_ids)
        if n > limit:
            raise RequestError(
                f"the phrase of box {i} is {n - 2} tokens long; at most {limit - 2} fit. "
                "Shorten it to a few words."
            )


def grounded_step_count(registry: ModelRegistry, req: LayoutRequest, steps: int
                        ) -> tuple[int, int]:
    """(steps that use the boxes, sampling steps): int(fraction x steps), as the pipeline does."""
    scheduler = new_scheduler(registry, req)
    scheduler.set_timesteps(steps)
    total = len(scheduler.timesteps)
    return int(req.gligen_fraction * total), total


def _callback(total: int, progress: ProgressFn | None, cancel: CancelToken | None,
              unet: Any, grounded: list[bool]) -> Callable[[int, Any, Any], None]:
    """The pipeline's per-step `callback`: progress, cancel, and which steps were grounded."""
    from diffusers.models.attention import GatedSelfAttentionDense

    gate = next((m for m in unet.modules() if type(m) is GatedSelfAttentionDense), None)

    def cb(step: int, timestep: Any, latents: Any) -> None:
        grounded.append(bool(gate is not None and gate.enabled))
        if progress is not None:
            progress(step + 1, total)
        show_preview(step + 1, total, latents)
        if cancel is not None:  # this pipeline has no interrupt flag: stop at once
            cancel.check()

    return cb


def run_layout(
    registry: ModelRegistry,
    req: LayoutRequest,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    undecoded: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Generate (or regenerate inside boxes) one image; `req` must be validated with a seed.
    With `undecoded` (mode generate only), the latents instead of the image."""
    from diffusers.utils.torch_utils import randn_tensor

    # 1. check what only the models can tell: phrase lengths, grounded steps
    role = UNET_ROLES[req.mode]
    pipe = layout_pipeline(registry, req.mode)
    phrases = [b["phrase"] for b in req.boxes]
    boxes = [list(b["box"]) for b in req.boxes]
    _check_phrase_tokens(pipe.tokenizer, phrases)
    steps, guidance = effective_steps_guidance(req)
    expected, total = grounded_step_count(registry, req, steps)
    if req.gligen_fraction > 0 and expected == 0:
        at_least = math.ceil(100 / total) / 100
        raise RequestError(
            f"gligen_fraction {req.gligen_fraction:g} of {total} steps grounds no step, so the "
            f"boxes would be ignored: raise it to at least {at_least:g} or use more steps"
        )

    # 2. fresh scheduler and adapters (LCM-LoRA in fast mode, concepts) on the shared models:
    # the GLIGEN pipeline has no LoRA/textual-inversion loaders, so a text-to-image view of
    # the very same UNet, text encoder, tokenizer and VAE loads them, for both to use
    adapters = base_pipeline(registry, role)
    configure_pipe(registry, adapters, req, role)
    pipe.scheduler = adapters.scheduler
    prompt = prompt_with_phrases(req.prompt, phrases) if req.append_phrases else req.prompt

    # 3. inputs of the mode
    extra: dict[str, Any] = {"width": req.width, "height": req.height}
    reference = None
    if req.mode == "inside_boxes":
        reference = req.image
        side = int(pipe.vae.config.sample_size)  # the pipeline's working size
        square = reference
        if square.size != (side, side):
            square = reference.resize((side, side), Image.Resampling.LANCZOS)
        f = pipe.vae_scale_factor
        latents = randn_tensor((1, 4, side // f, side // f), generator=cpu_generator(req.seed),
                               device=registry.device, dtype=pipe.unet.dtype)
        extra = {"width": side, "height": side, "gligen_inpaint_image": square,
                 "latents": latents}

    # 4. sample (Attend-and-Excite, if asked, between the steps)
    grounded: list[bool] = []
    info: dict[str, Any] = {}
    excitation = excitation_for(pipe, req, steps, info, prompt=prompt)
    report = _callback(steps, progress, cancel, pipe.unet, grounded)

    def callback(step: int, timestep: Any, latents: Any) -> None:
        if excitation is not None:  # this pipeline's callback returns nothing: in place
            latents.copy_(excitation.after_step(step, latents))
        report(step, timestep, latents)

    def call() -> Any:
        with _quiet_gligen(), _seeded_global_rng(req.seed, registry.device):
            return pipe(
                prompt=prompt,
                negative_prompt=req.negative_prompt or None,
                **text_options(pipe, req),
                num_inference_steps=steps,
                guidance_scale=guidance,
                gligen_scheduled_sampling_beta=req.gligen_fraction,
                gligen_phrases=phrases,
                gligen_boxes=boxes,
                generator=cpu_generator(req.seed),
                callback=callback,
                callback_steps=1,
                **extra,
                **({"output_type": "latent"} if undecoded else {}),
            )

    with excited(excitation):
        image = run_guarded(registry, call, cancel).images[0]
    info.update({
        "steps_run": steps, "guidance_run": guidance, "mode": req.mode,
        "boxes_used": len(boxes), "grounded_steps": sum(grounded), "prompt_used": prompt,
        **(excitation.info() if excitation is not None else {}),
    })

    # 5. inside boxes: back to the reference's size, its own pixels outside every box
    if reference is not None:
        info["working_size"] = list(image.size)
        if image.size != reference.size:
            image = image.resize(reference.size, Image.Resampling.LANCZOS)
        image = Image.composite(image, reference, box_mask(req.boxes, reference.size))
    info["output_size"] = [req.width, req.height] if undecoded else list(image.size)
    return image, info


def layout_runner(ctx: TaskContext, req: LayoutRequest, progress: ProgressFn | None,
                  cancel: CancelToken | None) -> tuple[Image.Image, dict[str, Any]]:
    """Studio task runner for box layouts (then hires fix's second pass, plain img2img, if
    asked); records the reference image it used."""
    image, info = run_layout(ctx.registry, req, progress, cancel,
                             undecoded=req.latent_upscale)
    if req.hires:
        image, hires = refine(ctx, req, image, info["steps_run"], progress, cancel)
        info.update(hires, output_size=list(image.size))
    req.record_inputs(ctx.outputs.record_input)
    return image, info
