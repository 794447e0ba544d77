"""A job stops within seconds of its deadline or its Stop even inside one long denoising
step: the denoiser's blocks check the running job's token, not only the step callbacks."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from studio.backend.common import Cancelled, CancelToken
from studio.backend.deadline import WATCHED_BLOCKS

SMALL = {"prompt": "a cat", "seed": 1, "steps": 2, "width": 64, "height": 64}


@pytest.fixture()
def slow_blocks(fresh_studio, monkeypatch):
    """Every ResNet block of the shared UNet takes 0.3 s: one step takes about 5 s."""
    unet = fresh_studio.registry.component("unet")
    blocks = [m for m in unet.modules() if type(m).__name__ == "ResnetBlock2D"]
    assert len(blocks) >= 8
    for block in blocks:
        forward = block.forward

        def slow(*args, _forward=forward, **kwargs):
            time.sleep(0.3)
            return _forward(*args, **kwargs)

        monkeypatch.setattr(block, "forward", slow)
    return fresh_studio


def test_a_job_past_its_deadline_stops_inside_the_step(slow_blocks):
    studio = slow_blocks
    studio.settings = replace(studio.settings, max_job_seconds=1.0)
    token = studio.job_token("visitor")  # what every UI and API job gets
    started = time.monotonic()
    with pytest.raises(Cancelled, match="ran past this server's limit of 1 s"):
        studio.txt2img({**SMALL, "steps": 1}, cancel=token)
    assert time.monotonic() - started < 3.0  # a whole step would take about 5 s


def test_stop_reaches_a_job_inside_its_step_and_the_next_job_runs(slow_blocks):
    studio = slow_blocks
    token, result = CancelToken(), {}

    def job() -> None:
        try:
            studio.txt2img({**SMALL, "steps": 1}, cancel=token)
        except Cancelled as err:
            result["stopped"] = (str(err), time.monotonic())

    thread = threading.Thread(target=job)
    thread.start()
    time.sleep(1.0)  # inside the first step
    token.cancel()
    asked = time.monotonic()
    thread.join(30)
    message, when = result["stopped"]
    assert "was stopped before it finished" in message and when - asked < 1.5


def test_outside_a_job_the_hooks_change_nothing(studio):
    unet = studio.registry.component("unet")
    hooked = [m for m in unet.modules()
              if type(m).__name__ in WATCHED_BLOCKS and m._forward_pre_hooks]
    assert hooked  # the registry hooked the blocks when it loaded the UNet
    a, b = studio.txt2img(SMALL).image, studio.txt2img(SMALL).image
    assert a.tobytes() == b.tobytes()
