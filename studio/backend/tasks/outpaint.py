"""Outpainting: extend the canvas on any side and let the inpainting model fill the new area.

The image is placed on a larger canvas; the new area is first filled with a blurred
continuation of the image's colours (what the blend mode starts from, and what the seam fades
from), then inpainted by the family's inpainting pipeline (`tasks.inpaint.run_inpaint`) with a
mask covering exactly the new area. The new pixels are pasted in with a feathered seam that
fades in over `mask_blur` px *outside* the original, so every original pixel is kept exactly.

The whole canvas is worked at once, at its size rounded to multiples of 8 (scaled down past
2048 px a side, as a full-image inpaint): the model sees all of the picture it continues.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from ..common import CancelToken, ProgressFn, TaskContext
from ..images import MAX_INPUT_PIXELS, MAX_INPUT_SIDE, load_image
from ..requests import GenerationParams, RequestError, check_number
from .inpaint import MAX_MASK_BLUR, InpaintRequest, check_mode, full_work_size, run_inpaint

MAX_EXTEND = 2048  # px added on one side in one go
SIDES = ("left", "right", "top", "bottom")
FILL_SIDE = 64  # the colour continuation is worked out at this size, then blurred up


def extend_sides(size: tuple[int, int], ratio: float) -> dict[str, int]:
    """The pixels to add on each side so an image of `size` reaches aspect ratio `ratio`
    (width / height), split evenly between the two sides (only ever adds)."""
    check_number("aspect ratio", ratio, 0.1, 10)
    w, h = size
    if w / h < ratio:
        extra = round(h * ratio) - w
        return {"left": extra // 2, "right": extra - extra // 2, "top": 0, "bottom": 0}
    extra = round(w / ratio) - h
    return {"left": 0, "right": 0, "top": extra // 2, "bottom": extra - extra // 2}


def fill_transparent(image: Image.Image) -> Image.Image:
    """RGB with the transparent pixels (alpha < 128) of `image` replaced by a smooth
    continuation of the visible colours (kept exactly). A1111 calls this inpainting fill
    "fill"; it is what blend mode starts from and what the outpainting seam fades from."""
    import cv2

    rgba = np.asarray(image.convert("RGBA"))
    rgb, hole = rgba[..., :3], rgba[..., 3] < 128
    if not hole.any():
        return Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    if hole.all():
        return Image.new("RGB", image.size, (127, 127, 127))
    h, w = hole.shape
    scale = min(1.0, FILL_SIDE / max(w, h))
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    # colour per small cell from the visible pixels only (a premultiplied mean)
    keep = (~hole).astype(np.float32)
    small_sum = cv2.resize(rgb.astype(np.float32) * keep[..., None], (sw, sh),
                           interpolation=cv2.INTER_AREA)
    small_w = cv2.resize(keep, (sw, sh), interpolation=cv2.INTER_AREA)
    known = small_w > 1e-3
    small = np.where(known[..., None], small_sum / np.maximum(small_w, 1e-3)[..., None], 0)
    filled = cv2.inpaint(np.clip(small, 0, 255).astype(np.uint8),
                         (~known).astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)
    big = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
    sigma = max(1.0, max(w, h) / FILL_SIDE)
    big = cv2.GaussianBlur(big, (0, 0), sigma)
    out = np.where(hole[..., None], big, rgb).astype(np.uint8)
    return Image.fromarray(out, mode="RGB")


def extend_canvas(image: Image.Image, left: int, right: int, top: int, bottom: int
                  ) -> tuple[Image.Image, Image.Image]:
    """(the filled canvas, its mask: white = the new area) for `image` extended by those
    pixels."""
    w, h = image.size
    canvas = Image.new("RGBA", (w + left + right, h + top + bottom), (0, 0, 0, 0))
    canvas.paste(image.convert("RGBA"), (left, top))
    mask = Image.new("L", canvas.size, 255)
    mask.paste(0, (left, top, left + w, top + h))
    return fill_transparent(canvas), mask


def seam_alpha(size: tuple[int, int], box: tuple[int, int, int, int],
               feather: float) -> np.ndarray:
    """Blend weights for the generated pixels: 0 inside `box` (the original: kept exactly),
    rising smoothly to 1 over `feather` px outside it (the seam fades in from the fill)."""
    w, h = size
    x0, y0, x1, y1 = box
    xs, ys = np.arange(w, dtype=np.float32) + 0.5, np.arange(h, dtype=np.float32) + 0.5
    dx = np.maximum(np.maximum(x0 - xs, xs - x1), 0)[None, :]
    dy = np.maximum(np.maximum(y0 - ys, ys - y1), 0)[:, None]
    dist = np.sqrt(dx * dx + dy * dy)
    if feather <= 0:
        return (dist > 0).astype(np.float32)
    t = np.clip(dist / float(feather), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


@dataclass
class OutpaintRequest(GenerationParams):
    """Extend `image` by `left`/`right`/`top`/`bottom` px and fill the new area from the
    prompt; `mask_blur` feathers the seam outside the original, `mode` as `/inpaint`'s."""

    image: Any = None
    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0
    mask_blur: float = 8.0
    mode: str = "inpaint"

    task: ClassVar[str] = "outpaint"
    prompt_required: ClassVar[bool] = False
    image_fields: ClassVar[tuple[str, ...]] = ("image",)

    def validate(self) -> None:
        check_mode(self.mode)
        for side in SIDES:
            check_number(f"{side} (pixels to add)", getattr(self, side), 0, MAX_EXTEND,
                         integer=True)
            setattr(self, side, int(getattr(self, side)))
        check_number("mask blur", self.mask_blur, 0, MAX_MASK_BLUR)
        self.mask_blur = float(self.mask_blur)
        if not any(getattr(self, side) for side in SIDES):
            raise RequestError("nothing to extend: give the pixels to add on at least one side "
                               "(left, right, top, bottom)")
        image = load_image(self.image, "image")
        w, h = self.canvas_size(image.size)
        if max(w, h) > MAX_INPUT_SIDE or w * h > MAX_INPUT_PIXELS:
            raise RequestError(
                f"the extended canvas would be {w}x{h}; the largest is {MAX_INPUT_SIDE} px per "
                f"side and {MAX_INPUT_PIXELS // 1_000_000} megapixels. Extend by less, or "
                "downscale the image first.")
        self.width, self.height = full_work_size((w, h))
        super().validate()
        self.image = image

    def canvas_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return (size[0] + self.left + self.right, size[1] + self.top + self.bottom)


def outpaint_runner(ctx: TaskContext, req: OutpaintRequest, progress: ProgressFn | None,
                    cancel: CancelToken | None) -> tuple[Image.Image, dict[str, Any]]:
    """Studio task runner: extend, inpaint the new area, keep the original exactly."""
    image = req.image
    canvas, mask = extend_canvas(image, req.left, req.right, req.top, req.bottom)
    common = {f.name: getattr(req, f.name) for f in fields(GenerationParams)}
    inner = InpaintRequest(**common, image=canvas, mask=mask, mask_blur=0.0, strength=1.0,
                           mode=req.mode)
    inner.validate()
    box = (req.left, req.top, req.left + image.width, req.top + image.height)
    result, info = run_inpaint(ctx, inner, seam_alpha(canvas.size, box, req.mask_blur),
                               progress, cancel)
    req.record_inputs(ctx.outputs.record_input)
    info.update({"canvas": list(canvas.size), "original_box": list(box),
                 "extended": {side: getattr(req, side) for side in SIDES}})
    info.pop("crop", None)
    return result, info


def extend_to_ratio_text(size: tuple[int, int], ratio: str) -> dict[str, int]:
    """`extend_sides` for a ratio written "16:9" (or "1.5")."""
    text = ratio.strip()
    try:
        if ":" in text:
            a, b = (float(v) for v in text.split(":", 1))
            value = a / b
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError) as err:
        raise RequestError(f"aspect ratio {ratio!r} is not a ratio; write it as 16:9 or "
                           "1.5") from err
    if not math.isfinite(value):
        raise RequestError(f"aspect ratio {ratio!r} is not a finite number")
    return extend_sides(size, value)
