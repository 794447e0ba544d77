"""Per-call overhead: what a call no longer repeats, and that skipping it changes nothing."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from PIL import Image

from studio.backend.models import schedulers
from studio.backend.models.schedulers import SCHEDULERS, make_scheduler
from studio.backend.outputs import PNG_COMPRESS_LEVEL, read_metadata

BASE = {"prompt": "a red circle", "seed": 7, "steps": 2, "width": 64, "height": 64}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_each_call_gets_its_own_scheduler_equal_to_a_fresh_one(studio, name):
    registry = studio.registry
    a, b = registry.new_scheduler(name), registry.new_scheduler(name)
    assert a is not b
    fresh = make_scheduler(name, registry.component("scheduler"))
    assert type(a) is type(fresh) and dict(a.config) == dict(fresh.config)
    # running one (timesteps, step index, solver history) leaves the next untouched
    a.set_timesteps(3)
    assert b.num_inference_steps is None and fresh.num_inference_steps is None
    b.set_timesteps(5)
    fresh.set_timesteps(3)
    assert torch.equal(a.timesteps, fresh.timesteps)
    assert len(b.timesteps) > len(a.timesteps)
    assert a.alphas_cumprod.data_ptr() != b.alphas_cumprod.data_ptr()


def test_repeated_calls_build_no_scheduler_or_pipeline_again(studio, monkeypatch):
    studio.txt2img(dict(BASE))  # warm: everything this request needs exists now
    built: list[str] = []
    real = schedulers.make_scheduler
    monkeypatch.setattr(schedulers, "make_scheduler",
                        lambda name, cfg: built.append(name) or real(name, cfg))
    pipelines = studio.registry.stats["pipeline_build"]
    first = studio.txt2img(dict(BASE))
    second = studio.txt2img(dict(BASE))
    assert built == []
    assert studio.registry.stats["pipeline_build"] == pipelines
    assert np.array_equal(np.asarray(first.image), np.asarray(second.image))


def test_a_stopped_run_does_not_change_the_next_image(studio):
    """A run stopped mid-way leaves its scheduler half-stepped; the next call starts clean."""
    from studio.backend.common import Cancelled, CancelToken

    before = studio.txt2img({**BASE, "steps": 4, "scheduler": "DPM++ 2M"})
    token = CancelToken()
    with pytest.raises(Cancelled):
        studio.txt2img({**BASE, "steps": 4, "scheduler": "DPM++ 2M"},
                       progress=lambda step, total: token.cancel(), cancel=token)
    after = studio.txt2img({**BASE, "steps": 4, "scheduler": "DPM++ 2M"})
    assert np.array_equal(np.asarray(before.image), np.asarray(after.image))


def _zlib_level_flag(path) -> int:
    """FLEVEL of the first IDAT's zlib header: 0 = fastest ... 3 = maximum compression."""
    data = open(path, "rb").read()
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4:at])[0]
    assert length >= 2
    return data[at + 5] >> 6


def test_saved_png_is_fast_compressed_and_pixel_identical(studio):
    result = studio.txt2img(dict(BASE))
    assert PNG_COMPRESS_LEVEL == 1 and _zlib_level_flag(result.path) == 0
    with Image.open(result.path) as saved:
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(result.image))
        _, payload = read_metadata(saved)
    assert payload["request"] == result.info["request"]
