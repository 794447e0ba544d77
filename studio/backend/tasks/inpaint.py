"""Inpainting: keep most of an image, regenerate the masked region from a prompt.

Two modes, both run diffusers' `StableDiffusionInpaintPipeline` assembled from the registry
(the text encoder, tokenizer and VAE are the shared ones):

- ``"inpaint"``: the 9-channel inpainting UNet (role ``"unet_inpaint"``), which sees the mask
  and the masked image and so blends the new content into its surroundings.
- ``"blend"``: the base UNet (role ``"unet"``) with blended latent diffusion (Avrahami et al.):
  after every step the latent outside the mask is replaced by the original latent noised to
  that step. The pipeline does exactly this when its UNet has 4 input channels (see
  `StableDiffusionInpaintPipeline.__call__`, "num_channels_unet == 4"). It is used as well,
  with a warning in the info, when the model set has no inpainting model.

Whatever the mode, after decoding the pixels outside the mask are pasted back from the input,
so they are bit-exact; `mask_blur` feathers the new content inwards from the mask edge.

Sizes. The output always has the input image's size. The working resolution (what the UNet
sees) is:

- full image (``only_masked`` off): the image size rounded to multiples of 8 (the VAE works on
  8x8 blocks), scaled down if a side exceeds 2048 px, or up if a side is below 64 px; the
  request's ``width``/``height`` are set to it (they are not inputs in this mode);
- ``only_masked`` on (A1111's "Only masked"): the mask's bounding box plus ``padding`` px,
  widened to the aspect ratio of ``width`` x ``height`` (diffusers' `get_crop_region`), is cut
  out, inpainted at exactly ``width`` x ``height`` (default 512x512; at least 64, multiples of
  8) and pasted back. A small region of a large photo is thus painted at full resolution.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from annotators.sam import MAX_CLICKS

from ..common import (
    CancelToken,
    ProgressFn,
    TaskContext,
    configure_pipe,
    cpu_generator,
    effective_steps_guidance,
    run_guarded,
    step_callback,
    text_options,
)
from ..images import load_image
from ..requests import (
    FAST_STEPS,
    MAX_SIDE,
    MIN_SIDE,
    GenerationParams,
    RequestError,
    check_number,
    loads_json,
)

MODES = ("inpaint", "blend")
MAX_PADDING = 1024
MAX_MASK_BLUR = 256
MAX_GROW = 1024
# A mask whose aspect ratio is within this of the image's is a scaled copy: resize it.
ASPECT_TOLERANCE = 0.01
VAE_BLOCK = 8


# ---------------------------------------------------------------------------- mask tools
def binary_array(mask: Image.Image) -> np.ndarray:
    """Boolean HxW array of a mask image: True (white, >= 128) = change."""
    return np.asarray(mask.convert("L")) >= 128


def from_binary(arr: np.ndarray) -> Image.Image:
    """An L-mode 0/255 mask image from a boolean HxW array."""
    return Image.fromarray(np.where(arr, 255, 0).astype(np.uint8), mode="L")


def mask_from_rgba(img: Image.Image) -> Image.Image:
    """Composite over black and threshold at 50 %: white = change, black/transparent = keep."""
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
    lum = np.asarray(img.convert("RGBA").convert("L"), dtype=np.float32)
    value = lum * rgba[..., 3] / 255.0
    return from_binary(value >= 128)


def mask_from_editor(value: Any) -> Image.Image | None:
    """The mask painted in a Gradio ImageEditor: every painted (non-transparent) layer pixel.

    `value` is the editor's dict (background, layers, composite); layers may be PIL images,
    arrays or file paths. Returns None when nothing is loaded in the editor.
    """
    if not isinstance(value, dict):
        return None
    background = value.get("background")
    layers = [x for x in (value.get("layers") or []) if x is not None]
    size = None
    if background is not None:
        size = load_image(background, "image").size
    painted: np.ndarray | None = None
    for layer in layers:
        img = load_image(layer, "mask layer", mode="RGBA")
        if size is not None and img.size != size:
            img = img.resize(size, Image.Resampling.NEAREST)
        alpha = np.asarray(img)[..., 3] > 0
        painted = alpha if painted is None else painted | alpha
    if painted is None:
        if size is None:
            return None
        painted = np.zeros((size[1], size[0]), dtype=bool)
    return from_binary(painted)


def _distance_inside(arr: np.ndarray) -> np.ndarray:
    """Euclidean distance (px) of each True pixel to the nearest False pixel (0 outside)."""
    import cv2

    if arr.all():  # no False pixel: treat the border as outside
        padded = np.pad(arr, 1, constant_values=False).astype(np.uint8)
        return cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    return cv2.distanceTransform(arr.astype(np.uint8), cv2.DIST_L2, 5)


def check_mode(mode: Any) -> None:
    """Refuse a mode other than "inpaint" and "blend" (inpaint's and outpaint's)."""
    if not isinstance(mode, str) or mode not in MODES:
        raise RequestError(
            f"unknown mode {mode!r}; use 'inpaint' (inpainting model) or 'blend' (base model "
            "with latent blending)"
        )


def _check_px(name: str, px: Any, hi: int) -> int:
    check_number(name, px, 0, hi, integer=True)
    return int(px)


def grow_mask(mask: Image.Image, px: int) -> Image.Image:
    """Dilate the white region by `px` pixels (Euclidean: round corners)."""
    px = _check_px("grow", px, MAX_GROW)
    arr = binary_array(mask)
    if px == 0 or not arr.any():
        return from_binary(arr)
    return from_binary(_distance_inside(~arr) <= px)


def shrink_mask(mask: Image.Image, px: int) -> Image.Image:
    """Erode the white region by `px` pixels."""
    px = _check_px("shrink", px, MAX_GROW)
    arr = binary_array(mask)
    if px == 0 or not arr.any():
        return from_binary(arr)
    return from_binary(_distance_inside(arr) > px)


def invert_mask(mask: Image.Image) -> Image.Image:
    """Swap change and keep."""
    return from_binary(~binary_array(mask))


def feather_alpha(mask: Image.Image, blur: float) -> np.ndarray:
    """Blend weights (HxW float in [0, 1]) for pasting new content into the original.

    Zero outside the mask (so outside pixels stay exact); inside it rises smoothly from the
    edge to 1 over `blur` pixels. `blur` 0 gives the hard binary mask.
    """
    arr = binary_array(mask)
    if blur <= 0:
        return arr.astype(np.float32)
    t = np.clip(_distance_inside(arr) / float(blur), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32) * arr


def composite(original: Image.Image, generated: Image.Image, alpha: np.ndarray) -> Image.Image:
    """original * (1 - alpha) + generated * alpha; pixels with alpha 0 are copied exactly."""
    orig = np.asarray(original.convert("RGB"))
    gen = np.asarray(generated.convert("RGB").resize(original.size, Image.Resampling.LANCZOS))
    out = orig.copy()
    inside = alpha > 0
    a = alpha[inside][:, None]
    blended = orig[inside].astype(np.float32) * (1.0 - a) + gen[inside].astype(np.float32) * a
    out[inside] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="RGB")


def mask_overlay(image: Image.Image, mask: Image.Image, blur: float = 0.0) -> Image.Image:
    """The image with the (feathered) mask tinted red: a preview of what will change."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    m = mask if mask.size == image.size else mask.resize(image.size, Image.Resampling.NEAREST)
    a = feather_alpha(m, blur)[..., None] * 0.55
    red = np.array([255.0, 40.0, 40.0], dtype=np.float32)
    return Image.fromarray(np.round(base * (1 - a) + red * a).astype(np.uint8), mode="RGB")


def load_mask(value: Any, size: tuple[int, int]) -> tuple[Image.Image, list[str]]:
    """Decode the mask input for an image of `size`; returns (0/255 L mask, warnings).

    White (>= 50 % after compositing over black) = change; black or transparent = keep; an
    ImageEditor value counts its painted layer pixels. A mask of another size is resized when
    its aspect ratio matches the image's (it is a scaled copy, e.g. painted on a preview; A1111
    resizes too), with a warning; a different aspect ratio is an error, because stretching
    would move the mask onto other pixels than the user marked.
    """
    if isinstance(value, dict) and "layers" in value:
        mask = mask_from_editor(value)
        if mask is None:
            raise RequestError("mask is missing: paint over the area to change")
    else:
        if value is None:
            raise RequestError(
                "mask is missing: paint over the area to change, click the object (SAM), or "
                "upload a mask (white = change)"
            )
        mask = mask_from_rgba(load_image(value, "mask", mode="RGBA"))
    warnings: list[str] = []
    if mask.size != size:
        (mw, mh), (iw, ih) = mask.size, size
        if abs((mw / mh) / (iw / ih) - 1.0) > ASPECT_TOLERANCE:
            raise RequestError(
                f"mask is {mw}x{mh} but image is {iw}x{ih}: their shapes differ, so the mask "
                "cannot be lined up with the image. Make the mask the same size as the image "
                "(white = change)."
            )
        grey = mask.resize(size, Image.Resampling.BILINEAR)
        mask = from_binary(binary_array(grey))
        warnings.append(f"mask was {mw}x{mh}; resized to the image size {iw}x{ih}")
    if not binary_array(mask).any():
        raise RequestError(
            "mask is empty: nothing is marked to change. Paint over the area (white = change) "
            "or click the object (SAM)."
        )
    return mask, warnings


# ---------------------------------------------------------------------------- SAM prompts
def parse_points(points: Any, size: tuple[int, int] | None = None) -> list[list[float]]:
    """SAM clicks from JSON text or a list: `[[x, y, label], ...]`, label 1 = object, 0 = not.

    Coordinates are image pixels; with `size` they must lie inside the image.
    """
    if points is None or (isinstance(points, str) and not points.strip()):
        return []
    if isinstance(points, str):
        try:
            points = loads_json(points, "points")
        except json.JSONDecodeError as err:
            raise RequestError(
                f"points is not valid JSON ({err.msg}); use [[x, y, 1], ...]"
            ) from err
    if not isinstance(points, (list, tuple)):
        raise RequestError("points must be a list like [[x, y, 1], [x, y, 0]]")
    if len(points) > MAX_CLICKS:  # SAM's own cap, said in this endpoint's words
        raise RequestError(f"points has {len(points)} clicks; at most {MAX_CLICKS} are taken "
                           "(SAM finds an object from a few clicks: add a box instead of more)")
    out: list[list[float]] = []
    for i, p in enumerate(points, 1):
        if not isinstance(p, (list, tuple)) or len(p) != 3:
            raise RequestError(f"point {i} must be [x, y, label], got {p!r}")
        x, y, label = p
        check_number(f"point {i} x", x, -math.inf, math.inf)
        check_number(f"point {i} y", y, -math.inf, math.inf)
        if isinstance(label, bool) or label not in (0, 1):
            raise RequestError(
                f"point {i} label must be 1 (object) or 0 (background), got {label!r}"
            )
        if size is not None and not (0 <= x < size[0] and 0 <= y < size[1]):
            raise RequestError(
                f"point {i} ({x:g}, {y:g}) is outside the {size[0]}x{size[1]} image"
            )
        out.append([float(x), float(y), int(label)])
    return out


def parse_box(box: Any, size: tuple[int, int] | None = None) -> list[float] | None:
    """An optional SAM box from JSON text or a list `[x0, y0, x1, y1]` (image pixels)."""
    if box is None or (isinstance(box, str) and not box.strip()):
        return None
    if isinstance(box, str):
        try:
            box = loads_json(box, "box")
        except json.JSONDecodeError as err:
            raise RequestError(f"box is not valid JSON ({err.msg}); use [x0, y0, x1, y1]") from err
    if box is None or (isinstance(box, (list, tuple)) and len(box) == 0):
        return None
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise RequestError(f"box must be [x0, y0, x1, y1], got {box!r}")
    for name, v in zip(("x0", "y0", "x1", "y1"), box, strict=True):
        check_number(f"box {name}", v, -math.inf, math.inf)
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise RequestError(f"box needs x1 > x0 and y1 > y0, got {[x0, y0, x1, y1]}")
    if size is not None and (x0 < 0 or y0 < 0 or x1 > size[0] or y1 > size[1]):
        raise RequestError(
            f"box {[x0, y0, x1, y1]} reaches outside the {size[0]}x{size[1]} image"
        )
    return [x0, y0, x1, y1]


def segment(ctx: TaskContext, image: Any, points: Any, box: Any
            ) -> tuple[Image.Image, dict[str, Any], list[Image.Image]]:
    """SAM through `ctx.annotators.sam_mask`: (0/255 L mask, JSON-able info, candidates).

    `points` `[[x, y, label], ...]` and `box` `[x0, y0, x1, y1]` (or their JSON text, or
    empty) are in the image's own pixels; the mask has the image's size. Candidates are the
    alternative masks SAM proposed when the annotator reports them (else just the mask).
    """
    img = load_image(image, "image")
    pts = parse_points(points, img.size)
    bx = parse_box(box, img.size)
    if not pts and bx is None:
        raise RequestError("no clicks and no box: click the object (or give a box) first")
    mask, info = ctx.annotators.sam_mask(img, pts, bx)
    mask = from_binary(binary_array(mask))
    candidates: list[Image.Image] = []
    clean: dict[str, Any] = {}
    for key, value in dict(info or {}).items():
        if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, (Image.Image, np.ndarray)) for v in value
        ):
            candidates = [from_binary(binary_array(_as_image(v))) for v in value]
        elif not isinstance(value, (Image.Image, np.ndarray)):
            clean[key] = value
    scores = clean.get("candidates")
    sam_candidates = getattr(ctx.annotators, "sam_candidates", None)
    if not candidates and isinstance(scores, list) and len(scores) > 1 and sam_candidates:
        # sam_mask reports only the candidates' scores: ask for their masks too (the image
        # embedding is cached, so this reruns only the light mask decoder)
        candidates = [from_binary(m) for m in sam_candidates(img, pts or None, bx)]
    clean.update({"points": pts, "box": bx, "mask_pixels": int(binary_array(mask).sum()),
                  "size": list(img.size)})
    return mask, clean, candidates or [mask]


def _as_image(value: Any) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    arr = np.asarray(value)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    return Image.fromarray(arr.astype(np.uint8))


def draw_prompts(image: Image.Image, points: Any = None, box: Any = None,
                 mask: Image.Image | None = None, corner: Any = None) -> Image.Image:
    """The image with the mask tinted and the SAM clicks (green +, red -) and box drawn."""
    from PIL import ImageDraw

    out = mask_overlay(image, mask) if mask is not None else image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    r = max(3, round(min(out.size) / 80))
    bx = parse_box(box)
    if bx is not None:
        draw.rectangle(bx, outline=(255, 220, 0), width=max(1, r // 2))
    if corner:
        x, y = corner[:2]
        draw.rectangle([x - r, y - r, x + r, y + r], outline=(255, 220, 0), width=max(1, r // 2))
    for x, y, label in parse_points(points):
        color = (40, 220, 60) if label == 1 else (240, 40, 40)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color, outline=(255, 255, 255))
    return out


# ---------------------------------------------------------------------------- sizes
def _round8(x: float) -> int:
    return int(min(MAX_SIDE, max(MIN_SIDE, int(x / VAE_BLOCK + 0.5) * VAE_BLOCK)))


def full_work_size(size: tuple[int, int]) -> tuple[int, int]:
    """Working resolution for a full-image inpaint of an image of `size` (see module doc)."""
    w, h = size
    scale = min(1.0, MAX_SIDE / max(w, h))
    if min(w, h) * scale < MIN_SIDE:
        scale = MIN_SIDE / min(w, h)
    if max(w, h) * scale > MAX_SIDE + VAE_BLOCK:
        raise RequestError(
            f"image is {w}x{h}: too long and thin to inpaint whole (the working size must be "
            f"{MIN_SIDE}-{MAX_SIDE} px per side). Turn on only_masked, or crop the image."
        )
    return _round8(w * scale), _round8(h * scale)


def crop_region(mask: Image.Image, width: int, height: int, padding: int) -> tuple[int, ...]:
    """The only-masked crop (x0, y0, x1, y1): exactly what the diffusers pipeline cuts out."""
    from diffusers.image_processor import VaeImageProcessor

    return tuple(int(v) for v in VaeImageProcessor.get_crop_region(mask, width, height,
                                                                   pad=padding))


# ---------------------------------------------------------------------------- request
@dataclass
class InpaintRequest(GenerationParams):
    """Inpaint the white region of `mask` in `image` (see the module doc for sizes).

    `image`/`mask` accept what `load_image` accepts (path, PIL, array, bytes, editor dict);
    `validate()` decodes them (the mask binarised, at the image's size) and the runner records
    them next to the outputs, so the stored request regenerates the image. The prompt may be
    empty (fill from the context, e.g. to remove an object).
    """

    image: Any = None
    mask: Any = None
    only_masked: bool = False
    padding: int = 32
    mask_blur: float = 4.0
    strength: float = 1.0
    mode: str = "inpaint"

    task: ClassVar[str] = "inpaint"
    prompt_required: ClassVar[bool] = False
    image_fields: ClassVar[tuple[str, ...]] = ("image", "mask")

    def validate(self) -> None:
        check_mode(self.mode)
        if not isinstance(self.only_masked, bool):
            raise RequestError(f"only_masked must be true or false, got {self.only_masked!r}")
        check_number("padding", self.padding, 0, MAX_PADDING, integer=True)
        check_number("mask blur", self.mask_blur, 0, MAX_MASK_BLUR)
        if isinstance(self.strength, bool) or not isinstance(self.strength, (int, float)) or not (
            math.isfinite(self.strength) and 0 < self.strength <= 1
        ):
            raise RequestError(
                f"strength must be more than 0 and at most 1, got {self.strength!r} "
                "(1 = repaint the masked area from scratch, 0.5 = keep half of it)"
            )
        image = load_image(self.image, "image")
        mask, warnings = load_mask(self.mask, image.size)
        if not self.only_masked:
            self.width, self.height = full_work_size(image.size)
        super().validate()
        self.padding, self.mask_blur = int(self.padding), float(self.mask_blur)
        self.strength = float(self.strength)
        steps = min(self.steps, FAST_STEPS) if self.fast else self.steps
        if int(steps * self.strength) < 1:
            raise RequestError(
                f"strength {self.strength:g} with {steps} steps runs no denoising step; use at "
                f"least {math.ceil(1 / self.strength)} steps or a higher strength"
            )
        self.image, self.mask, self.mask_warnings = image, mask, warnings

    def work(self) -> float:
        """Only strength x steps are run."""
        return super().work() * self.strength


# ---------------------------------------------------------------------------- pipelines
def inpaint_pipeline(registry: Any, mode: str) -> Any:
    """The family's inpainting pipeline on the inpainting UNet ("inpaint") or the base UNet
    ("blend")."""
    return registry.family.pipeline(registry, "inpaint", "unet_inpaint" if mode == "inpaint"
                                    else "unet")


def inpaint_runner(ctx: TaskContext, req: InpaintRequest, progress: ProgressFn | None,
                   cancel: CancelToken | None) -> tuple[Image.Image, dict[str, Any]]:
    """Studio task runner: inpaint, paste the outside back exactly, record the inputs."""
    result, info = run_inpaint(ctx, req, feather_alpha(req.mask, req.mask_blur), progress,
                               cancel)
    req.record_inputs(ctx.outputs.record_input)
    return result, info


def run_inpaint(ctx: TaskContext, req: InpaintRequest, alpha: np.ndarray,
                progress: ProgressFn | None, cancel: CancelToken | None
                ) -> tuple[Image.Image, dict[str, Any]]:
    """Inpaint `req.mask` of `req.image` (a validated request) and paste the new pixels in
    with the blend weights `alpha` (0 = the input pixel, exactly). Shared by Edit's inpaint
    and outpaint (`tasks.outpaint`), which differ only in the image, mask and seam."""
    registry = ctx.registry
    image, mask, warnings = req.image, req.mask, list(req.mask_warnings)

    # 1. mode and pipeline
    mode = req.mode
    if mode == "inpaint" and not registry.model_set.get("inpaint"):
        mode = "blend"
        warnings.append("this model set has no inpainting model: used 'blend' mode")
    pipe = inpaint_pipeline(registry, mode)
    unet_role = "unet_inpaint" if mode == "inpaint" else "unet"
    configure_pipe(registry, pipe, req, unet_role)
    steps, guidance = effective_steps_guidance(req)
    steps_run = min(int(steps * req.strength), steps)

    # 2. the mask the pipeline sees: the pipeline samples it at one pixel per latent cell (the
    # cell's top-left), so grow it by a cell diagonal (in image pixels) to regenerate every
    # cell touching the mask. The user's own mask decides what is pasted back.
    width, height = req.width, req.height
    if req.only_masked:
        x0, y0, x1, y1 = crop_region(mask, width, height, req.padding)
        scale = min(width / (x1 - x0), height / (y1 - y0))
    else:
        scale = min(width / image.width, height / image.height)
    pipe_mask = grow_mask(mask, math.ceil(pipe.vae_scale_factor * math.sqrt(2) / scale) + 1)
    crop = crop_region(pipe_mask, width, height, req.padding) if req.only_masked else None

    # 3. denoise
    def call() -> Any:
        return pipe(
            prompt=req.prompt,
            negative_prompt=req.negative_prompt or None,
            **text_options(pipe, req),
            image=image,
            mask_image=pipe_mask,
            width=width,
            height=height,
            padding_mask_crop=req.padding if req.only_masked else None,
            strength=req.strength,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=cpu_generator(req.seed),
            callback_on_step_end=step_callback(steps_run, progress, cancel),
        )

    out = run_guarded(registry, call, cancel)

    # 4. paste back: where alpha is 0 (outside the user's mask) the input pixels, exactly
    result = composite(image, out.images[0], alpha)
    info: dict[str, Any] = {
        "mode_run": mode,
        "steps_run": steps_run,
        "guidance_run": guidance,
        "work_size": [width, height],
        "crop": list(crop) if crop is not None else None,
        "mask_pixels": int(binary_array(mask).sum()),
        "warnings": warnings,
    }
    return result, info
