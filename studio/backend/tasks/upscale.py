"""Upscale: enlarge an image with an upscaler (a model such as RealESRGAN, or Lanczos).

No diffusion runs: the image goes through the upscaler (tiled for large images, on the
studio's device under its lock, as every job) and is saved with its parameters like any
output. A1111's "Extras" tab and `/sdapi/v1/extra-single-image` do the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from PIL import Image

from ..common import CancelToken, ProgressFn, TaskContext
from ..images import MAX_INPUT_PIXELS, MAX_INPUT_SIDE, load_image
from ..requests import (
    LANCZOS,
    UPSCALER_WORK,
    GenerationParams,
    RequestError,
    check_number,
    is_upscaler_model,
)

MIN_UPSCALE, MAX_UPSCALE = 1.0, 8.0


@dataclass
class UpscaleRequest(GenerationParams):
    """Enlarge `image` by `scale` with `upscaler` (a name `/upscale`'s tab lists). The
    common generation parameters are not used."""

    image: Any = None
    scale: float = 2.0
    upscaler: str = LANCZOS

    task: ClassVar[str] = "upscale"
    prompt_required: ClassVar[bool] = False
    image_fields: ClassVar[tuple[str, ...]] = ("image",)

    def validate(self) -> None:
        super().validate()
        check_number("scale", self.scale, MIN_UPSCALE, MAX_UPSCALE)
        self.scale = float(self.scale)
        if not isinstance(self.upscaler, str) or not self.upscaler.strip():
            raise RequestError("upscaler must be an upscaler's name (lanczos, none or a "
                               "model the studio lists)")
        self.image = load_image(self.image, "image")
        w, h = self.target()
        if max(w, h) > MAX_INPUT_SIDE or w * h > MAX_INPUT_PIXELS:
            raise RequestError(
                f"upscaling {self.image.width}x{self.image.height} by {self.scale:g} makes "
                f"{w}x{h}, over the largest image the studio makes ({MAX_INPUT_SIDE} px per "
                f"side, {MAX_INPUT_PIXELS // 1_000_000} megapixels); use a smaller scale")

    def target(self) -> tuple[int, int]:
        """The output size (after validate())."""
        return round(self.image.width * self.scale), round(self.image.height * self.scale)

    def check_upscalers(self, library: Any) -> None:
        self.upscaler = library.check(self.upscaler, "upscaler", latent=False)

    def megapixels(self) -> float:
        w, h = self.target()
        return w * h / 1e6

    def work(self) -> float:
        """An upscaler model's pass over the output (resizing alone costs next to nothing)."""
        model = is_upscaler_model(self.upscaler)
        return UPSCALER_WORK * self.megapixels() if model else 0.01 * self.megapixels()


def upscale_runner(ctx: TaskContext, req: UpscaleRequest, progress: ProgressFn | None,
                   cancel: CancelToken | None) -> tuple[Image.Image, dict[str, Any]]:
    """Studio task runner: the image through the upscaler, at exactly the target size."""
    if progress is not None:
        progress(0, 1)
    source = req.image.size
    image = ctx.upscalers.upscale(req.image, req.upscaler, req.target(), cancel)
    if progress is not None:
        progress(1, 1)
    req.record_inputs(ctx.outputs.record_input)
    return image, {"upscaler": req.upscaler, "scale": req.scale, "input_size": list(source),
                   "size": list(image.size)}
