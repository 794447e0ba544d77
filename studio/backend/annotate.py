"""Annotator service: the backend side of the Annotate and SAM tabs and of `/annotate`,
`/sam_mask`. No gradio here; the UI and the API call these methods and show their
`ValueError`s (AnnotatorInputError, MissingWeightsError) as messages.

Annotators are built lazily, on first use of each, from `sources` (Hub ids or local paths;
`annotators.tiny.build_tiny_annotator_weights` gives the tiny set's), then kept.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from annotators import (
    ANNOTATOR_NAMES,
    DEFAULT_SOURCES,
    AnnotatorInputError,
    check_name,
    get_annotator,
)

log = logging.getLogger(__name__)


class AnnotatorService:
    """Builds, caches and runs annotators by name; one lock guards building.

    Every run holds `device_lock` (the Studio's: one job on the device at a time), so a tool
    call waits for a running generation wherever it comes from (a tab, the gradio API, the
    A1111 API, a Ray replica) instead of each caller having to remember the lock.
    """

    names: list[str] = list(ANNOTATOR_NAMES)

    def __init__(
        self,
        sources: dict[str, str] | None = None,
        device: str = "cpu",
        cache_dir: Path | None = None,
        offline: bool = False,
        sam_cache_size: int = 4,
        device_lock: threading.RLock | None = None,
    ) -> None:
        unknown = set(sources or {}) - set(ANNOTATOR_NAMES)
        if unknown:
            raise ValueError(
                f"Unknown annotator source(s) {sorted(unknown)}; known: {', '.join(self.names)}."
            )
        if sam_cache_size < 1:
            raise ValueError("sam_cache_size must be at least 1.")
        # Missing entries fall back to the real Hub defaults.
        self.sources: dict[str, str] = {**DEFAULT_SOURCES, **{k: str(v) for k, v in
                                                               (sources or {}).items()}}
        self.device = device  # "auto" is resolved (CUDA, MPS, CPU) when the first model loads
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.offline = offline
        self.sam_cache_size = sam_cache_size
        self._annotators: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.device_lock = device_lock or threading.RLock()
        self.load_counts: dict[str, int] = {}

    def get(self, name: str) -> Any:
        """The annotator `name`, built on first use (thread-safe)."""
        name = check_name(name)
        with self._lock:
            if self.device == "auto":
                from studio.backend.models.devices import pick_device

                self.device = str(pick_device("auto"))
            if name not in self._annotators:
                kwargs = {"cache_size": self.sam_cache_size} if name == "sam" else {}
                log.info("loading annotator %s from %s", name, self.sources.get(name, "-"))
                self._annotators[name] = get_annotator(
                    name, self.sources.get(name), device=self.device, cache_dir=self.cache_dir,
                    offline=self.offline, **kwargs,
                )
                self.load_counts[name] = self.load_counts.get(name, 0) + 1
            return self._annotators[name]

    def annotate(
        self, image: Any, annotator: str, resolution: int = 512, **options: Any,
    ) -> tuple[Image.Image, dict[str, Any]]:
        """Validate and run; info has 'annotator', 'size' and, for openpose, 'keypoints'.

        `resolution` is both the detection and the output resolution (short side; the map's
        sides are multiples of 64); `detect_resolution=` in options overrides the first. For
        "sam", options are `points` and `box` (see `sam_mask`).
        """
        with self.device_lock:
            return self._annotate(image, annotator, resolution, **options)

    def _annotate(
        self, image: Any, annotator: str, resolution: int, **options: Any,
    ) -> tuple[Image.Image, dict[str, Any]]:
        name = check_name(annotator)
        if name == "sam":
            extra = set(options) - {"points", "box"}
            if extra:
                raise AnnotatorInputError(
                    f"Unknown option(s) {sorted(extra)} for sam; allowed: points, box."
                )
            return self.sam_mask(image, options.get("points"), options.get("box"))
        annot = self.get(name)
        allowed = set(annot.option_names()) - {"image_resolution"}
        extra = set(options) - allowed
        if extra:
            raise AnnotatorInputError(
                f"Unknown option(s) {sorted(extra)} for {name}; allowed: "
                f"{', '.join(sorted(allowed))}."
            )
        options.setdefault("detect_resolution", resolution)
        out = annot.annotate(image, image_resolution=resolution, **options)
        info = {"annotator": name, **out.info, "size": list(out.image.size)}
        return out.image, info

    def sam_mask(
        self, image: Any, points: list[list[float]] | str | None,
        box: list[float] | str | None,
    ) -> tuple[Image.Image, dict[str, Any]]:
        """Mask for clicks [[x, y, label], ...] (image pixels; 1 include, 0 exclude) and/or a
        box [x0, y0, x1, y1]; JSON strings accepted. Returns an L mask (255 = selected) of the
        image's size; info has 'score', 'candidates' and 'embedding_computations'.
        """
        with self.device_lock:
            out = self.get("sam").annotate(image, points=points, box=box)
        return out.image, {"annotator": "sam", **out.info}

    def detect(self, image: Any, text: str, threshold: float = 0.3
               ) -> list[dict[str, Any]]:
        """Objects that the phrases of `text` name (Grounding DINO): `{box, label, score}`
        each, in image pixels, best first."""
        with self.device_lock:
            return self.get("grounding").detect(image, text, threshold)

    def sam_candidates(self, image: Any, points: list[list[float]] | None,
                       box: list[float] | None) -> list[np.ndarray]:
        """Every mask SAM proposed for these prompts (bool arrays), best first as it ranks
        them; the image embedding is cached, so this reruns only the mask decoder."""
        with self.device_lock:
            pred = self.get("sam").predict(image, points=points, box=box)
        return [np.asarray(m, dtype=bool) for m in pred.masks]

    def draw_pose(self, keypoints_json: str | dict[str, Any], width: int, height: int
                  ) -> Image.Image:
        """Render (edited) OpenPose JSON into the openpose ControlNet's map, width x height."""
        from annotators.openpose import draw_pose

        return draw_pose(keypoints_json, (width, height))

    def pose_json(self, keypoints_json: str | dict[str, Any],
                  canvas: tuple[int, int] | None = None) -> dict[str, Any]:
        """OpenPose JSON (pixels or normalised; on `canvas` when it names none) checked and
        rewritten in pixels, every part a list (the pose editor's canonical form)."""
        from annotators.openpose import pose_json_in_pixels

        return pose_json_in_pixels(keypoints_json, canvas)
