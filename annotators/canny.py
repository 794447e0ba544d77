"""Canny edges (OpenCV via controlnet_aux's CannyDetector): white edges on black."""

from __future__ import annotations

from PIL import Image

from ._cnaux import cnaux
from .base import (
    Annotator,
    AnnotatorOutput,
    ImageInput,
    check_number,
    check_resolution,
    checked_map_size,
    load_image,
)
from .errors import AnnotatorInputError


class CannyAnnotator(Annotator):
    """Edges for the canny ControlNet; `low_threshold`/`high_threshold` are OpenCV's (0-255)."""

    name = "canny"

    def annotate(
        self,
        image: ImageInput,
        detect_resolution: int = 512,
        image_resolution: int = 512,
        low_threshold: int = 100,
        high_threshold: int = 200,
    ) -> AnnotatorOutput:
        """Edge map of `image`, sized by `image_resolution` (short side, multiples of 64)."""
        # 1. check inputs
        arr = load_image(image)
        detect_resolution = check_resolution(detect_resolution, "detect_resolution")
        image_resolution = check_resolution(image_resolution, "image_resolution")
        low = check_number(low_threshold, "low_threshold", 0, 255)
        high = check_number(high_threshold, "high_threshold", 0, 255)
        if low > high:
            raise AnnotatorInputError(
                f"low_threshold ({low:g}) must not be above high_threshold ({high:g})."
            )
        checked_map_size(arr.shape[1], arr.shape[0], detect_resolution)
        size = checked_map_size(arr.shape[1], arr.shape[0], image_resolution)
        # 2. detect, exactly as controlnet_aux does (resize to detect size, cv2.Canny, resize)
        detector = cnaux("canny").CannyDetector()
        edges = detector(arr, low_threshold=low, high_threshold=high,
                         detect_resolution=detect_resolution, image_resolution=image_resolution,
                         output_type="np")
        # 3. wrap up
        return AnnotatorOutput(Image.fromarray(edges), {"size": list(size)})
