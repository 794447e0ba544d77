"""Live previews: they come while the image forms, cost a bounded share of the time, and never
change the image, the saved file or a run without previews."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from studio.backend.previews import Previewer, previewing, show

SMALL = {"prompt": "a red circle", "seed": 3, "steps": 6, "width": 64, "height": 64}


@pytest.fixture()
def eager(studio, monkeypatch):
    """The shared tiny studio with previews as often as the time share allows."""
    monkeypatch.setattr(studio, "settings", replace(studio.settings, preview_interval=0.0))
    return studio


def collect(studio, task: str, request: dict) -> tuple[object, list[tuple[Image.Image, int]]]:
    shown: list[tuple[Image.Image, int]] = []
    result = studio.run(task, dict(request), preview=lambda im, step, total: shown.append(
        (im, step)))
    return result, shown


def test_previews_come_and_change_nothing(eager):
    # Euler a is ancestral: it draws noise every step, from the request's generator only
    request = {**SMALL, "scheduler": "Euler a"}
    plain = eager.txt2img(dict(request))
    result, shown = collect(eager, "txt2img", request)
    assert shown, "no preview was shown"
    steps = [s for _, s in shown]
    assert steps == sorted(set(steps)) and max(steps) < request["steps"]  # never the last
    assert all(im.mode == "RGB" and im.size == (64, 64) for im, _ in shown)
    assert np.array_equal(np.asarray(plain.image), np.asarray(result.image))
    assert result.info["file"] != plain.info["file"]
    assert eager.current_job == {}  # the job's preview is not left behind


@pytest.mark.parametrize("task,request_", [
    ("layout", {**SMALL, "boxes": [{"phrase": "a red circle", "box": [0.1, 0.1, 0.6, 0.6]}],
                "gligen_fraction": 1.0}),
    ("prompt_edit", {**SMALL, "edited_prompt": "a blue circle"}),
])
def test_other_pipelines_preview_too(eager, task, request_):
    plain = eager.run(task, dict(request_))
    result, shown = collect(eager, task, request_)
    assert shown
    assert np.array_equal(np.asarray(plain.image), np.asarray(result.image))


def test_previews_off_in_the_settings_show_none(studio, monkeypatch):
    monkeypatch.setattr(studio, "settings", replace(studio.settings, previews=False,
                                                    preview_interval=0.0))
    _, shown = collect(studio, "txt2img", SMALL)
    assert shown == []


def test_a_model_set_without_a_preview_decoder_still_generates(fresh_studio, caplog):
    from studio.backend.service import Studio

    studio = Studio(replace(fresh_studio.settings, preview_interval=0.0),
                    model_set=fresh_studio.model_set.with_repos(taesd="/nonexistent/taesd"))
    with caplog.at_level(logging.WARNING):
        first, shown = collect(studio, "txt2img", SMALL)
        second, _ = collect(studio, "txt2img", SMALL)
    assert shown == [] and first.image is not None and second.image is not None
    warnings = [r for r in caplog.records if "live previews are off" in r.getMessage()]
    assert len(warnings) == 1  # said once, not on every job


class FakeDecoder(torch.nn.Module):
    """Stands in for TAESD: a grey image, taking `cost` seconds."""

    def __init__(self, cost: float) -> None:
        super().__init__()
        self.cost = cost
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def decode(self, z: torch.Tensor):  # noqa: ANN201 - mimics AutoencoderTiny.decode
        time.sleep(self.cost)
        return type("Out", (), {"sample": torch.zeros(z.shape[0], 3, 8, 8)})()


def run_previews(step_s: float, decode_s: float, steps: int = 150) -> tuple[Previewer, float]:
    previewer = Previewer(lambda: FakeDecoder(decode_s), lambda im, s, t: None,
                          min_interval=0.0)
    latents = torch.zeros(1, 4, 2, 2)
    start = time.monotonic()
    with previewing(previewer):
        for step in range(1, steps + 1):
            time.sleep(step_s)  # the step's own work
            show(step, steps, latents)
    return previewer, time.monotonic() - start


def test_previews_take_at_most_a_tenth_of_the_time():
    cheap, cheap_total = run_previews(0.004, 0.0005)
    dear, dear_total = run_previews(0.002, 0.01)
    for previewer, total in ((cheap, cheap_total), (dear, dear_total)):
        # the budget holds, up to one preview that took longer than the one before it
        assert previewer.shown and previewer.spent <= 0.1 * total + previewer.worst
    # the steps between previews (k) follow the costs: a cheap decoder previews far more often
    assert len(cheap.shown) > 3 * len(dear.shown)


def test_min_interval_spaces_the_previews():
    shown: list[float] = []
    previewer = Previewer(lambda: FakeDecoder(0.0), lambda im, s, t: shown.append(
        time.monotonic()), min_interval=0.05)
    with previewing(previewer):
        for step in range(1, 40):
            time.sleep(0.01)
            show(step, 40, torch.zeros(1, 4, 2, 2))
    gaps = np.diff(shown)
    assert len(shown) >= 3 and gaps.min() >= 0.05


def test_the_predicted_image_is_previewed_not_the_noisy_latents():
    """A sampler's x0 estimate is what a preview shows, when the scheduler gives one."""
    from diffusers import EulerAncestralDiscreteScheduler

    seen: list[torch.Tensor] = []

    class Recorder(FakeDecoder):
        def decode(self, z):  # noqa: ANN001, ANN201
            seen.append(z.clone())
            return super().decode(z)

    scheduler = EulerAncestralDiscreteScheduler()
    scheduler.set_timesteps(4)
    previewer = Previewer(lambda: Recorder(0.0), lambda *a: None, min_interval=0.0,
                          max_share=1.0)
    with previewing(previewer):
        previewer.watch(scheduler)
        sample = torch.randn(1, 4, 2, 2) * scheduler.init_noise_sigma
        out = scheduler.step(torch.zeros_like(sample), scheduler.timesteps[0], sample,
                             generator=torch.Generator().manual_seed(0))
        show(1, 4, out.prev_sample)
    # zero predicted noise: x0 is the sample itself, while prev_sample has new noise in it
    assert torch.allclose(seen[0], sample)
    assert not torch.allclose(out.prev_sample, sample)


def test_a_failing_decoder_stops_previews_not_the_job(caplog):
    class Broken(FakeDecoder):
        def decode(self, z):  # noqa: ANN001, ANN201
            raise RuntimeError("boom")

    previewer = Previewer(lambda: Broken(0.0), lambda *a: None, min_interval=0.0,
                          max_share=1.0)
    with previewing(previewer), caplog.at_level(logging.ERROR):
        for step in range(1, 5):
            show(step, 5, torch.zeros(1, 4, 2, 2))
    assert previewer.failed and previewer.shown == []
    assert len([r for r in caplog.records if "preview" in r.getMessage()]) == 1
