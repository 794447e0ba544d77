"""Helpers for replaying A1111 clients' calls against a served studio."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import requests
from PIL import Image, ImageDraw


def api(app_url: str, route: str) -> str:
    return app_url.rstrip("/") + route


def b64(image: Image.Image, data_url: bool = False) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    text = base64.b64encode(buf.getvalue()).decode()
    return "data:image/png;base64," + text if data_url else text


def png(value: str) -> Image.Image:
    """A base64 PNG as the client decodes it (it must be a PNG)."""
    raw = base64.b64decode(value)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image


def pixels(answer: requests.Response, index: int = 0) -> np.ndarray:
    return np.asarray(png(answer.json()["images"][index]).convert("RGB"), np.int16)


def info(answer: requests.Response) -> dict[str, Any]:
    """`info` is a JSON string, as A1111 sends it."""
    text = answer.json()["info"]
    assert isinstance(text, str)
    return json.loads(text)


def sketch(size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), "black")
    ImageDraw.Draw(image).rectangle((size // 6, size // 6, size * 5 // 6, size * 5 // 6),
                                    outline="white", width=3)
    return image


def while_running(post: Callable[[], requests.Response], poll: Callable[[], Any],
                  every: float = 0.05) -> tuple[requests.Response, list[Any]]:
    """Run `post` in a thread and call `poll` until it answers (a client's progress loop)."""
    answer: dict[str, requests.Response] = {}
    thread = threading.Thread(target=lambda: answer.setdefault("r", post()))
    thread.start()
    polled = []
    while thread.is_alive():
        polled.append(poll())
        time.sleep(every)
    thread.join()
    return answer["r"], polled
