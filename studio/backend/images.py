"""Turn user-supplied images (PIL, numpy, file path, bytes) into checked RGB PIL images.

Paths go through the file gate (`files.check_file`): the server decodes only files it was
given or made. Sizes are checked from the header, before any pixel is decoded.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .files import check_file
from .requests import RequestError

MAX_INPUT_SIDE = 8192
MAX_INPUT_PIXELS = 40_000_000
MIN_INPUT_SIDE = 8
MAX_INPUT_BYTES = 64 * 1024**2  # a file larger than this is refused before it is read
SOURCE_KEY = "studio_source"  # Image.info key: the real path an input image was read from


def limit_decoded_pixels() -> None:
    """Make Pillow itself refuse images above the studio's input limit (called at start-up).

    Gradio decodes uploads before the studio sees them; Pillow raises DecompressionBombError
    above twice MAX_IMAGE_PIXELS, so this makes a small PNG that would decode to more than
    MAX_INPUT_PIXELS fail at open instead of filling memory.
    """
    Image.MAX_IMAGE_PIXELS = MAX_INPUT_PIXELS // 2


def too_large_message(name: str, err: BaseException) -> str:
    """Why an image Pillow refused as a decompression bomb is refused (its size, the limit)."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    size = f"{int(found[1])} pixels, " if found else ""
    return (
        f"{name} is far too large ({size}over {2 * Image.MAX_IMAGE_PIXELS // 1_000_000} "
        f"megapixels once decoded). The largest accepted is {MAX_INPUT_SIDE} px per side and "
        f"{MAX_INPUT_PIXELS // 1_000_000} megapixels. Downscale it first."
    )


def unreadable_reason(err: BaseException) -> str:
    """Why Pillow could not read a file, in words (not its message: that names the
    server-side path of the upload)."""
    if "decompressed data too large" in str(err).lower():
        return "its metadata (PNG text chunks) is too large to read; save it without"
    if isinstance(err, OSError) and not isinstance(err, UnidentifiedImageError):
        return "truncated or corrupt"
    return "not a known image format"


def load_image(value: Any, name: str = "image", mode: str = "RGB") -> Image.Image:
    """Decode and check an input image; errors say which input and what is wrong."""
    if value is None:
        raise RequestError(f"{name} is missing: upload an image")
    try:
        if isinstance(value, Image.Image):
            img = value
        elif isinstance(value, np.ndarray):
            arr = value
            if arr.dtype != np.uint8:
                if arr.size and np.nanmax(arr) <= 1.0:
                    arr = arr * 255
                arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
            img = Image.fromarray(arr)
        elif isinstance(value, (bytes, bytearray)):
            img = Image.open(io.BytesIO(value))
        elif isinstance(value, (str, Path)):
            source = check_file(value, name, max_bytes=MAX_INPUT_BYTES)
            img = Image.open(source)
        elif isinstance(value, dict) and ("path" in value or "composite" in value):
            return load_image(value.get("composite") or value.get("path"), name, mode)
        else:
            raise RequestError(f"{name} must be an image, got {type(value).__name__}")
        w, h = img.size
        if w * h > MAX_INPUT_PIXELS or max(w, h) > MAX_INPUT_SIDE:
            raise RequestError(
                f"{name} is {w}x{h}; the largest accepted is {MAX_INPUT_SIDE} px per side and "
                f"{MAX_INPUT_PIXELS // 1_000_000} megapixels. Downscale it first."
            )
        if min(w, h) < MIN_INPUT_SIDE:
            raise RequestError(
                f"{name} is {w}x{h}; it must be at least {MIN_INPUT_SIDE} px per side"
            )
        img.load()
        source = getattr(img, "filename", "") or None
        if img.mode != mode:
            if mode == "RGB" and img.mode in ("RGBA", "LA", "P"):
                rgba = img.convert("RGBA")
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(bg, rgba).convert("RGB")
            else:
                img = img.convert(mode)
        img.info.pop(SOURCE_KEY, None)  # a PNG text chunk must not claim a source
        if source:
            img.info[SOURCE_KEY] = str(source)
        return img
    except RequestError:
        raise
    except Image.DecompressionBombError as err:  # Pillow refuses it before decoding
        raise RequestError(too_large_message(name, err)) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise RequestError(
            f"{name} could not be read as an image ({unreadable_reason(err)}). Use a PNG, "
            "JPEG or WebP file."
        ) from err
