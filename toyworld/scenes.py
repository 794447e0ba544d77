"""Seeded scenes of flat coloured shapes, and everything derived exactly from each scene."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 64
BACKGROUND = (245, 245, 240)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 50, 180),  # the rare class: ~1% of scenes (SeedSelect's long tail)
}
COMMON_COLOURS = ("red", "green", "blue", "yellow")
RARE_COLOUR = "purple"
RARE_RATE = 0.005  # per shape: ~1% of scenes
SHAPES = ("circle", "square", "triangle")
HELD_OUT_SHAPE = "cross"  # never in training scenes: textual inversion learns it from examples
SIZES = {"small": (12, 18), "large": (20, 28)}


@dataclass(frozen=True)
class Shape:
    """One shape: kind, colour name, centre (cx, cy) and size (side / diameter) in pixels."""

    kind: str
    colour: str
    cx: int
    cy: int
    size: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """Pixel box [x0, y0, x1) like PIL: the square the shape is drawn in."""
        h = self.size // 2
        return self.cx - h, self.cy - h, self.cx - h + self.size, self.cy - h + self.size

    @property
    def phrase(self) -> str:
        return f"a {self.colour} {self.kind}"

    def draw(self, draw: ImageDraw.ImageDraw, fill: Any, outline_only: bool = False,
             width: int = 2) -> None:
        x0, y0, x1, y1 = self.box
        kw = {"outline": fill, "width": width} if outline_only else {"fill": fill}
        if self.kind == "circle":
            draw.ellipse((x0, y0, x1 - 1, y1 - 1), **kw)
        elif self.kind == "square":
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), **kw)
        elif self.kind == "triangle":
            pts = [(self.cx, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)]
            draw.polygon(pts, **kw)
        elif self.kind == "cross":
            t = max(3, self.size // 3)
            a, b = self.cx - t // 2, self.cx - t // 2 + t
            c, d = self.cy - t // 2, self.cy - t // 2 + t
            for rect in ((a, y0, b - 1, y1 - 1), (x0, c, x1 - 1, d - 1)):
                draw.rectangle(rect, **kw)
        else:
            raise ValueError(f"unknown shape {self.kind!r}")


@dataclass
class Scene:
    """A scene and what every tab needs, derived exactly from it."""

    shapes: list[Shape]
    size: int = SIZE
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def caption(self) -> str:
        return " and ".join(s.phrase for s in self.shapes)

    def render(self) -> Image.Image:
        img = Image.new("RGB", (self.size, self.size), BACKGROUND)
        d = ImageDraw.Draw(img)
        for s in self.shapes:
            s.draw(d, COLOURS[s.colour])
        return img

    def mask(self, index: int) -> np.ndarray:
        """Boolean mask of shape `index` as drawn (later shapes do not overlap it)."""
        img = Image.new("L", (self.size, self.size), 0)
        self.shapes[index].draw(ImageDraw.Draw(img), 255)
        return np.asarray(img) > 127

    def scribble(self, width: int = 2) -> Image.Image:
        """White outlines on black: what the scribble ControlNet expects."""
        img = Image.new("RGB", (self.size, self.size), (0, 0, 0))
        d = ImageDraw.Draw(img)
        for s in self.shapes:
            s.draw(d, (255, 255, 255), outline_only=True, width=width)
        return img

    def edges(self) -> Image.Image:
        """Edge map of the rendered scene (a 1-px morphological gradient, white on black)."""
        gray = self.render().convert("L")
        grad = np.asarray(gray.filter(ImageFilter.MaxFilter(3)), dtype=np.int16) - np.asarray(
            gray.filter(ImageFilter.MinFilter(3)), dtype=np.int16)
        return Image.fromarray(np.where(grad > 20, 255, 0).astype(np.uint8)).convert("RGB")

    def boxes(self) -> list[dict[str, Any]]:
        """Boxes with phrases, normalised to [0, 1] as the layout tab takes them."""
        n = float(self.size)
        return [{"phrase": s.phrase, "box": [round(v / n, 4) for v in s.box]}
                for s in self.shapes]

    def recoloured(self, index: int, colour: str) -> tuple[Scene, str]:
        """(the same scene with shape `index` in `colour`, the instruction that says so)."""
        shapes = list(self.shapes)
        shapes[index] = replace(shapes[index], colour=colour)
        return Scene(shapes, self.size), f"make the {self.shapes[index].kind} {colour}"


def _overlaps(a: Shape, b: Shape, margin: int = 2) -> bool:
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    return not (ax1 + margin <= bx0 or bx1 + margin <= ax0 or ay1 + margin <= by0
                or by1 + margin <= ay0)


def random_shape(rng: random.Random, kinds: tuple[str, ...] = SHAPES,
                 rare_rate: float = RARE_RATE, size: int = SIZE) -> Shape:
    kind = rng.choice(kinds)
    colour = RARE_COLOUR if rng.random() < rare_rate else rng.choice(COMMON_COLOURS)
    lo, hi = SIZES[rng.choice(tuple(SIZES))]
    s = rng.randint(lo, hi)
    h = s // 2 + 1
    return Shape(kind, colour, rng.randint(h, size - h), rng.randint(h, size - h), s)


def random_scene(seed: int, max_shapes: int = 3, kinds: tuple[str, ...] = SHAPES,
                 rare_rate: float = RARE_RATE) -> Scene:
    """A scene of 1..max_shapes non-overlapping shapes; the same seed gives the same scene."""
    rng = random.Random(seed)
    count = rng.randint(1, max_shapes)
    shapes: list[Shape] = []
    for _ in range(200):  # rejection sampling: bounded, deterministic
        if len(shapes) == count:
            break
        cand = random_shape(rng, kinds, rare_rate)
        if all(not _overlaps(cand, s) for s in shapes):
            shapes.append(cand)
    return Scene(shapes)


def circularity(area: float, perimeter: float) -> float:
    return 4 * math.pi * area / max(perimeter, 1e-6) ** 2
