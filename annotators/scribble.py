"""Scribble: a user's canvas drawing -> the clean map the scribble ControlNet expects.

That map is white lines on black, strictly binary. User canvases come in every flavour: black
ink on white paper, white chalk on black, or coloured strokes on a transparent layer (Gradio's
sketchpad). We find the strokes, binarise them, resize without losing thin lines and optionally
thicken them. No detector in controlnet_aux does this for drawings (its scribble modes turn
photos into scribbles via HED/PiDiNet), so this is our own short numpy/OpenCV code.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .base import (
    Annotator,
    AnnotatorOutput,
    ImageInput,
    check_choice,
    check_number,
    check_resolution,
    checked_map_size,
    load_image,
)
from .errors import AnnotatorInputError

LINE_COLORS = ("auto", "dark", "light")


def stroke_mask(arr: np.ndarray, threshold: float = 128, line_color: str = "auto") -> np.ndarray:
    """Boolean HxW mask of the strokes in an RGB(A) uint8 drawing.

    With a (partly) transparent alpha channel, strokes are the opaque pixels, whatever their
    colour. Otherwise strokes are pixels darker ("dark") or lighter ("light") than `threshold`;
    "auto" reads the background from the image border (light border -> dark lines).
    """
    if arr.shape[2] == 4 and arr[..., 3].min() < 255:
        return arr[..., 3] >= threshold
    gray = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if line_color == "auto":
        border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
        line_color = "dark" if np.median(border) >= 128 else "light"
    return gray < threshold if line_color == "dark" else gray > threshold


class ScribbleAnnotator(Annotator):
    """Canvas drawing -> binary white-on-black scribble map."""

    name = "scribble"

    def annotate(
        self,
        image: ImageInput,
        detect_resolution: int = 512,
        image_resolution: int = 512,
        threshold: int = 128,
        line_color: str = "auto",
        thickness: int = 0,
    ) -> AnnotatorOutput:
        """Scribble map sized by `image_resolution`.

        `threshold` (0-255) separates ink from paper, `line_color` is auto/dark/light (the
        colour of the lines in the drawing), `thickness` (0-32 px) thickens every line by that
        many pixels on each side at the output size. `detect_resolution` is accepted for the
        common interface; a drawing needs no detection step.
        """
        # 1. check inputs
        arr = load_image(image, keep_alpha=True)
        check_resolution(detect_resolution, "detect_resolution")
        image_resolution = check_resolution(image_resolution, "image_resolution")
        threshold = check_number(threshold, "threshold", 1, 254)
        line_color = check_choice(line_color, "line_color", LINE_COLORS)
        thickness = int(check_number(thickness, "thickness", 0, 32))
        out_w, out_h = checked_map_size(arr.shape[1], arr.shape[0], image_resolution)

        # 2. find the strokes
        ink = stroke_mask(arr, threshold, line_color)
        if not ink.any():
            raise AnnotatorInputError(
                "The drawing has no lines: draw something first (or check line_color)."
            )

        # 3. resize: area-average then keep any pixel at least a quarter covered, so one-pixel
        # lines survive a downscale instead of fading into grey and vanishing
        import cv2

        cover = cv2.resize(ink.astype(np.float32), (out_w, out_h), interpolation=cv2.INTER_AREA)
        lines = cover >= 0.25
        if thickness:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * thickness + 1,) * 2)
            lines = cv2.dilate(lines.astype(np.uint8), kernel).astype(bool)

        # 4. white lines on black, 3 channels, strictly 0/255
        out = np.zeros((out_h, out_w, 3), np.uint8)
        out[lines] = 255
        return AnnotatorOutput(Image.fromarray(out), {"size": [out_w, out_h]})
