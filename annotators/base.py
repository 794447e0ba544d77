"""What every annotator shares: image loading and validation, output sizing, the base class.

Only numpy and PIL are imported here; torch, cv2 and controlnet_aux load inside the annotators
that need them, so `import annotators` stays cheap.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from PIL import Image, ImageOps

from .errors import AnnotatorInputError

# Limits on what we accept (input) and produce (output). 40 MP is a 7.3k x 5.5k photo; beyond
# that the annotators would need many GB and minutes, so we ask the user to resize instead.
MIN_SIDE = 16
MAX_SIDE = 8192
MAX_PIXELS = 40_000_000
MIN_RESOLUTION = 64
MAX_RESOLUTION = 4096

ImageInput = Image.Image | np.ndarray | str | os.PathLike
A = TypeVar("A", bound="Annotator")


@dataclass
class AnnotatorOutput:
    """A control map (or mask) and what else the annotator found (keypoints, scores...)."""

    image: Image.Image
    info: dict[str, Any] = field(default_factory=dict)


def check_image_size(width: int, height: int, what: str = "image") -> None:
    """Raise AnnotatorInputError unless width x height is a size the annotators can handle."""
    if width <= 0 or height <= 0:
        raise AnnotatorInputError(f"The {what} is empty ({width}x{height} px): upload or draw one.")
    if min(width, height) < MIN_SIDE:
        raise AnnotatorInputError(
            f"The {what} is {width}x{height} px, too small: annotators need at least "
            f"{MIN_SIDE}x{MIN_SIDE} px."
        )
    if max(width, height) > MAX_SIDE:
        raise AnnotatorInputError(
            f"The {what} is {width}x{height} px; the longest side may be at most {MAX_SIDE} px. "
            "Resize it first."
        )
    if width * height > MAX_PIXELS:
        raise AnnotatorInputError(
            f"The {what} is {width}x{height} px ({width * height / 1e6:.1f} MP); at most "
            f"{MAX_PIXELS // 1_000_000} MP is allowed. Resize it first."
        )


def check_resolution(value: Any, name: str = "resolution") -> int:
    """An integer resolution in [MIN_RESOLUTION, MAX_RESOLUTION] (JSON floats like 512.0 pass)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise AnnotatorInputError(f"{name} must be a whole number of pixels, got {value!r}.")
    if not float(value).is_integer():
        raise AnnotatorInputError(f"{name} must be a whole number of pixels, got {value!r}.")
    value = int(value)
    if not MIN_RESOLUTION <= value <= MAX_RESOLUTION:
        raise AnnotatorInputError(
            f"{name} must be between {MIN_RESOLUTION} and {MAX_RESOLUTION} px, got {value}."
        )
    return value


def map_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """(width, height) of a control map made at `resolution`: controlnet_aux's rule.

    The short side becomes `resolution`, the aspect ratio is kept and both sides are rounded to
    multiples of 64 (exactly `controlnet_aux.util.resize_image`, computed without resizing so we
    can validate before doing any work).
    """
    k = float(resolution) / min(height, width)
    out_h = int(np.round(height * k / 64.0)) * 64
    out_w = int(np.round(width * k / 64.0)) * 64
    return out_w, out_h


def checked_map_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """map_size, refusing outputs over the size limits (e.g. very elongated images)."""
    out_w, out_h = map_size(width, height, resolution)
    if max(out_w, out_h) > MAX_SIDE or out_w * out_h > MAX_PIXELS:
        raise AnnotatorInputError(
            f"At resolution {resolution} this {width}x{height} px image would become "
            f"{out_w}x{out_h} px, over the {MAX_SIDE} px / {MAX_PIXELS // 1_000_000} MP limit. "
            "Use a lower resolution or crop the image."
        )
    return out_w, out_h


def _flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    # Same blend as controlnet_aux.util.HWC3: transparent pixels become white.
    color = rgba[..., :3].astype(np.float32)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return (color * alpha + 255.0 * (1.0 - alpha)).clip(0, 255).astype(np.uint8)


def _open_path(path: str | os.PathLike) -> Image.Image:
    try:
        img = Image.open(path)  # lazy: only the header is read here
    except FileNotFoundError as err:
        raise AnnotatorInputError(f"Image file not found: {os.fspath(path)}") from err
    except Image.DecompressionBombError as err:
        raise AnnotatorInputError(
            f"{os.fspath(path)} is far too large to open safely ({err}). Resize it first."
        ) from err
    except (Image.UnidentifiedImageError, IsADirectoryError, OSError) as err:
        raise AnnotatorInputError(f"{os.fspath(path)} is not an image file PIL can read.") from err
    check_image_size(*img.size)
    return img


def _from_pil(img: Image.Image, keep_alpha: bool) -> np.ndarray:
    check_image_size(*img.size)
    img = ImageOps.exif_transpose(img)  # phone photos: match what the browser shows
    if img.mode in ("I;16", "I;16B", "I;16L"):
        gray = (np.asarray(img, dtype=np.uint16) // 257).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = np.array(img.convert("RGBA"))
        return rgba if keep_alpha else _flatten_alpha(rgba)
    return np.array(img.convert("RGB"))  # a writable copy (np.asarray of PIL is read-only)


def _from_numpy(arr: np.ndarray, keep_alpha: bool) -> np.ndarray:
    if arr.size == 0:
        raise AnnotatorInputError(f"The image is empty (array shape {arr.shape}): upload one.")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise AnnotatorInputError(
            f"Expected an image array shaped HxW, HxWx3 or HxWx4, got shape {arr.shape}."
        )
    check_image_size(arr.shape[1], arr.shape[0])
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        raise AnnotatorInputError(
            f"Image arrays must be uint8 (0-255), got {arr.dtype}; convert with "
            "(x * 255).round().astype('uint8') if your values are in 0-1."
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    if arr.shape[2] == 4:
        return np.ascontiguousarray(arr) if keep_alpha else _flatten_alpha(arr)
    return np.ascontiguousarray(arr)


def load_image(image: ImageInput, *, keep_alpha: bool = False) -> np.ndarray:
    """PIL image, numpy array or file path -> uint8 array, HxWx3 RGB.

    Transparency is flattened onto white (as controlnet_aux does) unless `keep_alpha`, in which
    case images that have an alpha channel come back HxWx4 RGBA. Sizes are checked before any
    pixel is decoded, so a 100 MP file is refused without being loaded.
    """
    if isinstance(image, (str, os.PathLike)):
        if isinstance(image, str) and not image.strip():
            raise AnnotatorInputError("No image given (empty path): upload or draw one.")
        with _open_path(Path(image)) as img:
            return _from_pil(img, keep_alpha)
    if isinstance(image, Image.Image):
        return _from_pil(image, keep_alpha)
    if isinstance(image, np.ndarray):
        return _from_numpy(image, keep_alpha)
    if image is None:
        raise AnnotatorInputError("No image given: upload or draw one.")
    raise AnnotatorInputError(
        f"Unsupported image type {type(image).__name__}: pass a PIL image, a numpy array or a path."
    )


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """`value` must be one of `choices` (for string options coming from the UI or JSON)."""
    if value not in choices:
        raise AnnotatorInputError(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
    return value


def check_bool(value: Any, name: str) -> bool:
    """A real boolean (JSON true/false), not a truthy string like "false"."""
    if not isinstance(value, (bool, np.bool_)):
        raise AnnotatorInputError(f"{name} must be true or false, got {value!r}.")
    return bool(value)


def check_number(value: Any, name: str, low: float, high: float) -> float:
    """A finite number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise AnnotatorInputError(f"{name} must be a number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise AnnotatorInputError(f"{name} must be between {low:g} and {high:g}, got {value:g}.")
    return value


class Annotator:
    """Base class, in the controlnet_aux style.

    `from_pretrained(path_or_repo)` -> `to(device)` (returns self) ->
    `__call__(image, detect_resolution, image_resolution, **options)` returning a PIL image.
    `annotate(...)` does the same work and also returns an `info` dict (keypoints, scores...).
    Annotators without weights (canny, scribble) take no source.
    """

    name: ClassVar[str] = ""
    default_source: ClassVar[str | None] = None

    def __init__(self) -> None:
        self._device = "cpu"

    @classmethod
    def from_pretrained(
        cls: type[A],
        path_or_repo: str | os.PathLike | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> A:
        """Build the annotator; this default is for annotators that need no weights."""
        if path_or_repo is not None or kwargs:
            raise AnnotatorInputError(
                f"The {cls.name} annotator needs no weights; got source {path_or_repo!r}."
            )
        return cls()

    @property
    def device(self) -> Any:
        """Where the annotator runs (read from the model's parameters when it has one)."""
        return self._device

    def to(self: A, device: Any) -> A:
        """Move to `device` ("cpu", "cuda", a torch.device) and return self."""
        self._device = str(device)
        return self

    def annotate(
        self, image: ImageInput, detect_resolution: int = 512, image_resolution: int = 512,
        **options: Any,
    ) -> AnnotatorOutput:
        """Run on `image`; return the map (PIL) and an info dict."""
        raise NotImplementedError

    def __call__(
        self, image: ImageInput, detect_resolution: int = 512, image_resolution: int = 512,
        **options: Any,
    ) -> Image.Image:
        """The control map alone, as a PIL image of the requested size."""
        return self.annotate(image, detect_resolution, image_resolution, **options).image

    def option_names(self) -> list[str]:
        """Keyword options `annotate` accepts beyond image and resolutions (for validation)."""
        import inspect

        params = inspect.signature(self.annotate).parameters
        return [
            n for n, p in params.items()
            if n not in ("image", "self") and p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
