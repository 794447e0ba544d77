"""Name -> annotator class, imported only when first asked for (nothing heavy at import)."""

from __future__ import annotations

import importlib
import os
from typing import Any

from .base import Annotator
from .errors import AnnotatorInputError

_CLASSES = {
    "canny": ("canny", "CannyAnnotator"),
    "depth": ("depth", "DepthAnnotator"),
    "openpose": ("openpose", "OpenposeAnnotator"),
    "scribble": ("scribble", "ScribbleAnnotator"),
    "sam": ("sam", "SamAnnotator"),
    "grounding": ("grounding", "GroundingAnnotator"),
}
ANNOTATOR_NAMES: tuple[str, ...] = tuple(_CLASSES)
WEIGHTED_ANNOTATORS: tuple[str, ...] = ("depth", "openpose", "sam", "grounding")

# Where real weights come from by default (Hub ids; a local file/folder works as a source too).
DEFAULT_SOURCES: dict[str, str] = {
    "depth": "Intel/dpt-hybrid-midas",  # MiDaS v3 DPT-Hybrid, transformers layout
    "openpose": "lllyasviel/Annotators",  # body_pose_model.pth, hand_pose_model.pth, facenet.pth
    "sam": "ybelkada/segment-anything/checkpoints/sam_vit_b_01ec64.pth",  # SAM ViT-B
    "grounding": "IDEA-Research/grounding-dino-tiny",  # open-vocabulary boxes from words
}


def check_name(name: Any) -> str:
    """`name` if it is a known annotator, else a clear AnnotatorInputError."""
    if not isinstance(name, str) or name.strip().lower() not in _CLASSES:
        raise AnnotatorInputError(
            f"Unknown annotator {name!r}; choose one of {', '.join(ANNOTATOR_NAMES)}."
        )
    return name.strip().lower()


def annotator_class(name: str) -> type[Annotator]:
    """The class behind `name` (imports its module on first use)."""
    module, cls = _CLASSES[check_name(name)]
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)


def get_annotator(
    name: str,
    source: str | os.PathLike | None = None,
    *,
    device: Any = "cpu",
    cache_dir: str | os.PathLike | None = None,
    offline: bool = False,
    **kwargs: Any,
) -> Annotator:
    """Build annotator `name` from `source` (default: DEFAULT_SOURCES) and move it to `device`.

    `offline=True` never contacts the Hub: weights must be local or already cached.
    """
    name = check_name(name)
    cls = annotator_class(name)
    if name not in WEIGHTED_ANNOTATORS:
        return cls.from_pretrained(source, **kwargs).to(device)
    return cls.from_pretrained(
        source or DEFAULT_SOURCES[name], cache_dir=cache_dir, local_files_only=offline, **kwargs
    ).to(device)
