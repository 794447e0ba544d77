"""Instructions the Instruct tab answers with a tool instead of the diffusion model.

InstructDiffusion treats "mark the blue square in red" as a vision task whose answer is an
overlay, and the CVPR'23 tutorial's "LLM as the centre, tools as hands" routes such requests
to the right tool. This is that router with rules instead of an LLM: an instruction that
starts with "mark", "highlight" or "outline" is answered by a text mask (detector + SAM, as
in Edit's "Describe it") painted over the image. No UNet runs, the pixels outside the mask
stay exactly as they were, and the same input always gives the same answer. Everything else
goes to InstructPix2Pix as before. The request's `tools` flag turns the router off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..requests import RequestError
from .inpaint import binary_array
from .text_mask import text_mask

# Colours an instruction may name ("... in red"); red when none is named
MARK_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30), "green": (30, 190, 60), "blue": (30, 90, 235),
    "yellow": (250, 215, 20), "orange": (250, 140, 20), "purple": (150, 50, 200),
    "pink": (250, 110, 180), "cyan": (20, 210, 230), "magenta": (220, 30, 200),
    "white": (255, 255, 255), "black": (0, 0, 0),
}
DEFAULT_COLOUR = "red"
OPACITY = 0.55  # how much of the colour covers the marked pixels (the object stays visible)
_MARK = re.compile(
    r"^\s*(?:please\s+)?(?P<verb>mark|highlight|outline)\s+(?P<what>.+?)"
    r"(?:\s+(?:in|with)\s+(?P<colour>[a-z]+))?\s*[.!]?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class MarkPlan:
    """What to mark and how: `what` goes to the detector, `colour` is the overlay's."""

    verb: str
    what: str
    colour: str


def route(instruction: str) -> MarkPlan | None:
    """The tool plan for an instruction, or None when InstructPix2Pix should answer it.
    An unknown colour ("mark the cat in teal") is a RequestError listing the known ones."""
    m = _MARK.match(instruction or "")
    if not m:
        return None
    colour = (m.group("colour") or DEFAULT_COLOUR).lower()
    if colour not in MARK_COLOURS:
        raise RequestError(
            f"'{m.group('colour')}' is not a colour the marker knows; use one of "
            f"{', '.join(MARK_COLOURS)} (e.g. 'mark the cat in blue'), or untick Tools to "
            "send the instruction to the model"
        )
    return MarkPlan(m.group("verb").lower(), m.group("what").strip(), colour)


def overlay(image: Image.Image, mask: np.ndarray, colour: tuple[int, int, int],
            outline_only: bool = False) -> Image.Image:
    """`image` with `colour` laid over the mask's pixels (or only its 2 px rim); every pixel
    outside the mask is untouched."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    region = mask
    if outline_only:
        inner = mask.copy()
        for _ in range(2):  # erode by 2 px (4-neighbourhood)
            p = np.pad(inner, 1)
            inner = inner & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
        region = mask & ~inner
    alpha = 1.0 if outline_only else OPACITY
    out = arr.copy()
    out[region] = (1 - alpha) * arr[region] + alpha * np.asarray(colour, np.float32)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def run_mark(ctx: Any, image: Image.Image, plan: MarkPlan) -> tuple[Image.Image, dict[str, Any]]:
    """Answer a mark instruction: (the marked image at the input's size, info with the
    tool, the colour and what the detector found). Finding nothing is a RequestError."""
    mask, found = text_mask(ctx, image, plan.what)
    marked = overlay(image, binary_array(mask), MARK_COLOURS[plan.colour],
                     outline_only=plan.verb == "outline")
    return marked, {"tool": plan.verb, "marked": plan.what, "colour": plan.colour,
                    "boxes": found["boxes"], "labels": found["labels"],
                    "scores": found["scores"], "size": list(image.size)}
