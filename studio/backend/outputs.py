"""Save every image once, with its full parameters, and read them back.

Each PNG carries two text chunks: `parameters` in the AUTOMATIC1111 layout (so other tools
and PNG-info readers understand it) and `studio_request`, the exact request as JSON, so the
image can be regenerated bit-identically or sent back to a tab.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

REQUEST_CHUNK = "studio_request"
PARAMETERS_CHUNK = "parameters"


def a1111_parameters(request: dict[str, Any], model: str = "") -> str:
    """The A1111 `parameters` text: prompt, negative prompt, then `Key: value` pairs."""
    lines = [str(request.get("prompt", ""))]
    if request.get("negative_prompt"):
        lines.append(f"Negative prompt: {request['negative_prompt']}")
    pairs = [
        ("Steps", request.get("steps")),
        ("Sampler", "LCM" if request.get("fast") else request.get("scheduler")),
        ("CFG scale", request.get("guidance_scale")),
        ("Image CFG scale", request.get("image_guidance_scale")),
        ("Seed", request.get("seed")),
        ("Size", f"{request.get('width')}x{request.get('height')}"
         if request.get("width") else None),
        ("Model", model or None),
        ("Task", request.get("task")),
    ]
    lines.append(", ".join(f"{k}: {v}" for k, v in pairs if v not in (None, "")))
    return "\n".join(lines)


class OutputStore:
    """Writes images atomically into one folder (per day) with unique names."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._counter = 0

    def save(self, image: Image.Image, request: dict[str, Any], model: str = "",
             extra: dict[str, Any] | None = None) -> Path:
        """Save `image` with metadata; returns the final path. Never leaves partial files."""
        day = self.folder / time.strftime("%Y-%m-%d")
        day.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._counter += 1
            n = self._counter
        task = request.get("task", "image")
        stamp = time.strftime("%H%M%S")
        name = f"{stamp}-{n:04d}-{task}-{request.get('seed', 0)}-{uuid.uuid4().hex[:6]}.png"
        info = PngImagePlugin.PngInfo()
        info.add_text(PARAMETERS_CHUNK, a1111_parameters(request, model))
        payload = {"request": request, "model": model, **(extra or {})}
        info.add_text(REQUEST_CHUNK, json.dumps(payload, sort_keys=True))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=day)
        try:
            with os.fdopen(fd, "wb") as fh:
                image.save(fh, format="PNG", pnginfo=info)
            final = day / name
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return final

    def save_aux(self, image: Image.Image, stem: str) -> Path:
        """Save an auxiliary image (a control map, a mask) next to the outputs."""
        day = self.folder / time.strftime("%Y-%m-%d")
        day.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=day)
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG")
        final = day / f"{time.strftime('%H%M%S')}-{stem}-{uuid.uuid4().hex[:6]}.png"
        os.replace(tmp, final)
        return final


def read_metadata(image: Image.Image | str | Path) -> tuple[str, dict[str, Any] | None]:
    """Return (A1111 parameters text, studio payload or None) of a saved image.

    Unreadable or absurdly large files have no metadata (only the header is read here).
    """
    try:
        img = image if isinstance(image, Image.Image) else Image.open(image)
    except (OSError, ValueError, Image.DecompressionBombError):
        return "", None
    text = getattr(img, "text", None) or img.info
    params = text.get(PARAMETERS_CHUNK, "") if text else ""
    raw = text.get(REQUEST_CHUNK) if text else None
    payload = None
    if raw:
        try:
            payload = json.loads(raw)
        except json.JSONDecodeError:
            payload = None
    return params, payload
