"""Tool endpoints (annotate, segment, text masks) go through the Studio and wait for the job
holding the device, whoever calls them."""

from __future__ import annotations

import threading

from PIL import Image, ImageDraw


def test_a_tool_call_waits_for_the_running_job(studio):
    picture = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(picture).ellipse((16, 16, 48, 48), fill="white")
    holding, release, done = threading.Event(), threading.Event(), threading.Event()

    def job() -> None:
        with studio.exclusive("txt2img"):
            holding.set()
            release.wait(30)

    def tool() -> None:
        studio.annotate(picture, "canny", 64)
        done.set()

    threading.Thread(target=job, daemon=True).start()
    assert holding.wait(10)
    threading.Thread(target=tool, daemon=True).start()
    try:
        assert not done.wait(1.0)  # the device is busy: the annotator waits
    finally:
        release.set()
    assert done.wait(30)  # and runs as soon as the job ends
