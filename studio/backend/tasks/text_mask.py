"""Masks from words: "the dog" -> boxes from the open-vocabulary detector -> one SAM mask per
box (the box is SAM's prompt) -> their union (the Grounded-SAM / Inpaint Anything pattern).

The `/text_mask` endpoint and the Edit tab's "Describe it" call `text_mask`; picking or
dropping found objects re-runs only SAM on the boxes kept (`mask_from_boxes`; its image
embedding is cached, so only the light mask decoder runs again).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ..common import TaskContext
from ..images import load_image
from ..requests import RequestError, check_number
from .inpaint import binary_array, from_binary, parse_box

DEFAULT_THRESHOLD = 0.3  # Grounding DINO's usual box threshold
MAX_OBJECTS = 32  # boxes kept from one detection (best first)
MAX_TEXT_CHARS = 500  # the detector reads 256 tokens at most


def check_text(text: Any) -> str:
    if not isinstance(text, str) or not text.strip(" .\n\t"):
        raise RequestError(
            "text is empty: say what to select, e.g. 'the dog', or several things separated "
            "by '.' as in 'a cat. a bowl'"
        )
    if len(text) > MAX_TEXT_CHARS:
        raise RequestError(f"text is {len(text)} characters long; the limit is "
                           f"{MAX_TEXT_CHARS} (name the things to select in a few words)")
    return text.strip()


def text_mask(ctx: TaskContext, image: Any, text: Any, threshold: Any = DEFAULT_THRESHOLD
              ) -> tuple[Image.Image, dict[str, Any]]:
    """(0/255 L mask of the image's size, info) for what `text` names.

    info: `boxes` ([x0, y0, x1, y1] in image pixels), `labels`, `scores` (best first),
    `size`, `mask_pixels`. Nothing found is a RequestError naming the text and threshold.
    """
    img, text, threshold, objects = _detected(ctx, image, text, threshold, MAX_OBJECTS)
    boxes = [o["box"] for o in objects]
    mask = mask_from_boxes(ctx, img, boxes)
    return mask, {"boxes": boxes, "labels": [o["label"] for o in objects],
                  "scores": [o["score"] for o in objects], "text": text,
                  "threshold": threshold, "size": list(img.size),
                  "mask_pixels": int(binary_array(mask).sum())}


def mask_from_boxes(ctx: TaskContext, image: Any, boxes: list[Any]) -> Image.Image:
    """The union of SAM's masks for `boxes` (image pixels); an empty mask for no boxes."""
    img = load_image(image, "image")
    union = np.zeros((img.size[1], img.size[0]), bool)
    for box in boxes:
        mask, _ = ctx.annotators.sam_mask(img, None, parse_box(box, img.size))
        union |= binary_array(mask)
    return from_binary(union)


def layout_boxes(ctx: TaskContext, image: Any, text: Any, threshold: Any = DEFAULT_THRESHOLD,
                 limit: int = MAX_OBJECTS) -> list[dict[str, Any]]:
    """What `text` names in `image` as Layout boxes: `{"phrase": label, "box": [x0, y0, x1,
    y1]}` normalised to 0..1, best first, at most `limit` (the Layout tab's "find boxes by
    words", for regenerating inside them; the user then types what should be there)."""
    img, _, _, objects = _detected(ctx, image, text, threshold, limit)
    w, h = img.size
    return [{"phrase": o["label"],
             "box": [round(o["box"][0] / w, 4), round(o["box"][1] / h, 4),
                     round(o["box"][2] / w, 4), round(o["box"][3] / h, 4)]} for o in objects]


def _detected(ctx: TaskContext, image: Any, text: Any, threshold: Any, limit: int
              ) -> tuple[Image.Image, str, float, list[dict[str, Any]]]:
    """(image, text, threshold, the best `limit` objects found), all checked; finding
    nothing is a RequestError naming the text and the threshold."""
    img = load_image(image, "image")
    text = check_text(text)
    check_number("threshold", threshold, 0, 1)
    threshold = float(threshold)
    objects = ctx.annotators.detect(img, text, threshold)[:max(0, int(limit))]
    if not objects:
        lower = max(0.05, round(threshold / 2, 2))
        raise RequestError(
            f"nothing matching {text!r} was found at threshold {threshold:g}: lower the "
            f"threshold (e.g. {lower:g}) or describe it another way"
        )
    return img, text, threshold, objects
