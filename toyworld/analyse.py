"""A classical analyser of toy-world images: which shapes, which colours, where.

The semantic tests judge generated images with it, so it must be simple and verifiable:
foreground = pixels far from the background colour; objects = connected components; colour =
nearest palette colour of the component's median; shape = vertex count of the simplified
contour plus circularity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .scenes import BACKGROUND, COLOURS, circularity

MIN_AREA = 20  # pixels; smaller blobs are noise


@dataclass(frozen=True)
class Found:
    """An object found in an image."""

    colour: str
    shape: str
    centroid: tuple[float, float]
    area: int
    mask: np.ndarray


def foreground(image: Image.Image | np.ndarray, threshold: float = 60.0) -> np.ndarray:
    """Boolean mask of pixels whose colour is far from the plain background."""
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image,
                     dtype=np.float32)
    return np.linalg.norm(arr - np.array(BACKGROUND, np.float32), axis=-1) > threshold


def nearest_colour(rgb: np.ndarray) -> str:
    names = list(COLOURS)
    dists = [np.linalg.norm(rgb - np.array(COLOURS[n], np.float32)) for n in names]
    return names[int(np.argmin(dists))]


def classify_shape(mask: np.ndarray) -> str:
    """circle / square / triangle / cross (or "blob": concave but no cross) from the
    component's outer contour."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    area = float(mask.sum())
    perimeter = cv2.arcLength(contour, True)
    approx = cv2.approxPolyDP(contour, 0.06 * perimeter, True)
    hull_area = cv2.contourArea(cv2.convexHull(contour))
    solidity = cv2.contourArea(contour) / max(hull_area, 1.0)  # both polygon areas
    if solidity < 0.8:  # concave: a cross if it looks like one, else a shapeless blob
        return "cross" if cross_likeness(mask) >= 0.6 else "blob"
    if len(approx) == 3:
        return "triangle"
    x, y, w, h = cv2.boundingRect(contour)
    fill = area / max(w * h, 1)
    if len(approx) == 4 and fill > 0.85:
        return "square"
    if circularity(area, perimeter) > 0.7 or fill > 0.7:
        return "circle"
    return "triangle" if fill < 0.65 else "square"


def cross_likeness(mask: np.ndarray) -> float:
    """Best IoU of the component with an upright plus sign filling its bounding box (bar
    widths from a quarter to a half of the side): 1.0 for a drawn cross, low for blobs."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = y1 - y0, x1 - x0
    if not 0.75 <= w / max(h, 1) <= 1.33:
        return 0.0
    crop = mask[y0:y1, x0:x1]
    best = 0.0
    for frac in (0.25, 0.3, 0.35, 0.4, 0.45, 0.5):
        bw, bh = max(1, round(w * frac)), max(1, round(h * frac))
        plus = np.zeros_like(crop)
        plus[:, (w - bw) // 2:(w - bw) // 2 + bw] = True
        plus[(h - bh) // 2:(h - bh) // 2 + bh, :] = True
        best = max(best, iou(crop, plus))
    return best


def analyse(image: Image.Image | np.ndarray) -> list[Found]:
    """Every object in the image, largest first."""
    import cv2

    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    fg = foreground(arr)
    n, labels = cv2.connectedComponents(fg.astype(np.uint8), connectivity=4)
    found = []
    for i in range(1, n):
        mask = labels == i
        area = int(mask.sum())
        if area < MIN_AREA:
            continue
        ys, xs = np.nonzero(mask)
        colour = nearest_colour(np.median(arr[mask].astype(np.float32), axis=0))
        found.append(Found(colour, classify_shape(mask), (float(xs.mean()), float(ys.mean())),
                           area, mask))
    return sorted(found, key=lambda f: -f.area)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
