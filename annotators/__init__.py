"""Annotators: user photos and drawings -> ControlNet control maps and SAM masks.

No gradio, no diffusers, and nothing heavy at import: torch, OpenCV, controlnet_aux,
transformers and segment_anything load on first use.

    from annotators import get_annotator
    canny = get_annotator("canny")
    edges = canny(image, detect_resolution=512, image_resolution=512)   # PIL, white on black
    pose = get_annotator("openpose", "lllyasviel/Annotators", device="cuda")
    out = pose.annotate(photo)            # out.image: pose map, out.info["keypoints"]: JSON
    fixed = draw_pose(edited_json, (768, 512))

Names: canny, depth, openpose, scribble, sam. Sources: a Hub repo id, 'owner/name/path/file',
a local file or a local folder (see `DEFAULT_SOURCES`); the `tiny` set comes from
`annotators.tiny.build_tiny_annotator_weights`.
"""

from __future__ import annotations

from typing import Any

from .base import AnnotatorOutput, load_image, map_size
from .errors import AnnotatorError, AnnotatorInputError, MissingWeightsError, WeightsFormatError
from .registry import (
    ANNOTATOR_NAMES,
    DEFAULT_SOURCES,
    WEIGHTED_ANNOTATORS,
    annotator_class,
    check_name,
    get_annotator,
)

_LAZY = {
    "Annotator": "base",
    "CannyAnnotator": "canny",
    "DepthAnnotator": "depth",
    "OpenposeAnnotator": "openpose",
    "ScribbleAnnotator": "scribble",
    "SamAnnotator": "sam",
    "draw_pose": "openpose",
    "poses_to_json": "openpose",
    "json_to_poses": "openpose",
    "pose_json_in_pixels": "openpose",
    "mirror_person": "openpose",
    "parse_prompts": "sam",
    "build_tiny_annotator_weights": "tiny",
}

__all__ = [
    "ANNOTATOR_NAMES",
    "DEFAULT_SOURCES",
    "WEIGHTED_ANNOTATORS",
    "AnnotatorError",
    "AnnotatorInputError",
    "AnnotatorOutput",
    "MissingWeightsError",
    "WeightsFormatError",
    "annotator_class",
    "check_name",
    "get_annotator",
    "load_image",
    "map_size",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
