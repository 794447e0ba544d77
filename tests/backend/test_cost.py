"""Job time on this machine: a denoiser pass costs linear + quadratic in the megapixels, timed
at start-up; a job estimated over the time budget is refused before it runs, with its
estimate, and what fits still runs."""

from __future__ import annotations

from dataclasses import replace

import pytest

from studio.backend.cost import Rate
from studio.backend.requests import RequestError

SMALL = {"prompt": "a cat", "seed": 1, "steps": 2, "width": 64, "height": 64}


def test_self_attention_counts_with_the_square_of_the_pixels(studio):
    """Counted on the tiny UNet at two sizes: the linear part grows with the pixels, self-
    attention's products with their square (the pixels x4: the quadratic part x16)."""
    import torch

    from studio.backend.common import base_pipeline
    from studio.backend.cost import OperationCount, _timed

    pipe = base_pipeline(studio.registry)
    counts = []
    for side in (64, 128):
        count = OperationCount(pipe.unet)
        try:
            _timed(pipe, side, 1)
        finally:
            count.remove()
        counts.append(count)
    assert counts[1].linear / counts[0].linear == pytest.approx(4, rel=0.05)
    assert counts[1].quadratic / counts[0].quadratic == pytest.approx(16, rel=0.01)
    assert not any(m._forward_hooks for m in pipe.unet.modules()
                   if isinstance(m, torch.nn.Conv2d))  # the count leaves no hook behind
    rate = Rate(linear=1.0, quadratic=2.0)
    assert rate.pass_seconds(2.0) == 2.0 * (1.0 + 4.0)
    assert rate.job_seconds(10.0, 2.0) == 10.0 * (1.0 + 4.0)


def test_calibration_times_this_machine_and_refuses_what_would_overrun(fresh_studio):
    studio = fresh_studio
    rate = studio.calibrate()
    assert rate is studio.rate and rate.linear >= 0 and rate.quadratic >= 0
    assert rate.pass_seconds(0.004) > 0
    limit = 2 * rate.job_seconds(4 * 0.004096, 0.004096)  # twice what SMALL takes
    studio.settings = replace(studio.settings, max_job_seconds=max(limit, 1e-3))
    assert studio.txt2img(SMALL).image  # fits
    big = {**SMALL, "steps": 50, "width": 512, "height": 512}
    with pytest.raises(RequestError, match=r"would take about \d+ s on this server "
                                           r"\(txt2img at 0.26 megapixels"):
        studio.txt2img(big)
    assert studio.registry.stats["load"] > 0  # (the calibration loaded the models)
    assert studio.txt2img(SMALL).image  # the next job runs


def test_without_a_time_budget_nothing_is_estimated(fresh_studio):
    fresh_studio.rate = Rate(linear=1e6, quadratic=1e6)  # absurdly slow machine
    assert fresh_studio.settings.max_job_seconds == 0
    assert fresh_studio.txt2img(SMALL).image
