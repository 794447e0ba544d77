"""Sampling options every generating task shares, on the tiny set: the noise schedule (A1111's
"Schedule type"), clip skip, and a ControlNet unit's control mode. Each changes the image,
its default leaves it as it was, a seed reproduces it, and a pair that cannot work is refused
by name."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image, ImageDraw

from studio.backend.models.schedulers import SCHEDULES, ays_timesteps, make_scheduler
from studio.backend.requests import RequestError
from studio.backend.tasks.control import soft_weights

BASE = dict(prompt="a cat on a mat", seed=77, steps=3, guidance_scale=6.0, width=64,
            height=64, scheduler="Euler")


def _arr(result) -> np.ndarray:
    return np.asarray(result.image, np.float32)


@pytest.fixture(scope="module")
def plain(studio) -> np.ndarray:
    return _arr(studio.txt2img(dict(BASE)))


# SD1.5's own scheduler config already spaces its timesteps "leading" (A1111's ddim)
@pytest.mark.parametrize("schedule", [s for s in SCHEDULES if s not in ("default", "leading")])
def test_each_schedule_changes_the_image_and_reproduces(studio, plain, schedule) -> None:
    first = _arr(studio.txt2img({**BASE, "schedule": schedule}))
    again = _arr(studio.txt2img({**BASE, "schedule": schedule}))
    assert np.array_equal(first, again)
    assert np.abs(first - plain).mean() > 0.5, schedule


def test_the_default_schedule_is_the_samplers_own(studio, plain) -> None:
    assert np.array_equal(_arr(studio.txt2img({**BASE, "schedule": "default"})), plain)


def test_schedules_set_diffusers_options() -> None:
    import diffusers

    config = diffusers.EulerDiscreteScheduler().config
    karras = make_scheduler("DPM++ 2M Karras", config, "exponential")
    assert karras.config.use_exponential_sigmas and not karras.config.use_karras_sigmas
    assert make_scheduler("Euler", config, "trailing").config.timestep_spacing == "trailing"
    leading = make_scheduler("Euler", config, "leading").config
    assert (leading.timestep_spacing, leading.steps_offset) == ("leading", 1)
    ays = make_scheduler("Euler", config, "ays", "StableDiffusionTimesteps")
    ays.set_timesteps(10)
    assert [int(t) for t in ays.timesteps] == [999, 850, 736, 645, 545, 455, 343, 233, 124, 24]


@pytest.mark.parametrize("steps", [2, 7, 25, 150])
def test_align_your_steps_interpolates_other_step_counts(steps) -> None:
    import diffusers

    ac = diffusers.EulerDiscreteScheduler().alphas_cumprod
    ts = ays_timesteps("StableDiffusionTimesteps", steps, ac)
    assert len(ts) == steps and ts[0] == 999
    assert all(a > b >= 0 for a, b in zip(ts, ts[1:], strict=False))


@pytest.mark.parametrize(("change", "fragment"), [
    ({"scheduler": "Euler a", "schedule": "karras"},
     "sampler Euler a has no karras schedule; use Euler, DPM++ 2M,"),
    ({"scheduler": "DDIM", "schedule": "ays"}, "cannot take the Align Your Steps schedule"),
    ({"schedule": "polyexponential"}, "unknown schedule 'polyexponential'"),
    ({"fast": True, "schedule": "karras"}, "fast mode samples with LCM"),
    ({"clip_skip": 0}, "clip skip"),
    ({"clip_skip": 2.5}, "clip skip"),
    ({"clip_skip": 13}, "clip skip"),
])
def test_options_that_cannot_work_are_refused_by_name(studio, change, fragment) -> None:
    with pytest.raises(RequestError, match=re.escape(fragment)):
        studio.txt2img({**BASE, **change})


def test_clip_skip_uses_an_earlier_text_layer(studio, plain) -> None:
    assert np.array_equal(_arr(studio.txt2img({**BASE, "clip_skip": 1})), plain)
    skipped = _arr(studio.txt2img({**BASE, "clip_skip": 2}))
    assert np.abs(skipped - plain).mean() > 0.5
    saved = studio.txt2img({**BASE, "clip_skip": 2})
    assert saved.info["request"]["clip_skip"] == 2  # Regenerate runs it again the same way
    assert np.array_equal(_arr(saved), skipped)


def test_clip_skip_beyond_the_text_encoder_names_its_depth(studio) -> None:
    layers = studio.registry.component("text_encoder").config.num_hidden_layers
    with pytest.raises(RequestError, match=f"text encoder has {layers} layers"):
        studio.txt2img({**BASE, "clip_skip": layers + 1})


def test_clip_skip_where_the_pipeline_cannot_is_refused(studio) -> None:
    with pytest.raises(RequestError, match="clip skip 2: the instruct pipeline"):
        studio.instruct({"prompt": "make it red", "image": Image.new("RGB", (64, 64)),
                         "steps": 2, "width": 64, "height": 64, "clip_skip": 2})


# ---------------------------------------------------------------------- control modes
def _sketch() -> Image.Image:
    img = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(img).ellipse((12, 12, 52, 52), outline="white", width=3)
    return img


def _control(studio, guidance: float = 6.0, **unit) -> np.ndarray:
    units = [{"type": "canny", "image": _sketch(), **unit}]
    return _arr(studio.control({**BASE, "guidance_scale": guidance, "units": units}))


def test_soft_weights_are_the_extensions() -> None:
    weights = soft_weights(13)  # SD1.5: 12 down residuals and the middle block
    assert weights[-1] == 1.0 and weights[0] == pytest.approx(0.825 ** 12)
    assert all(a < b for a, b in zip(weights, weights[1:], strict=False))


def test_each_control_mode_changes_the_image(studio) -> None:
    balanced = _control(studio)
    assert np.array_equal(_control(studio, control_mode="balanced"), balanced)
    prompt = _control(studio, control_mode="prompt")
    control = _control(studio, control_mode="control")
    assert np.abs(prompt - balanced).mean() > 0.5
    assert np.abs(control - balanced).mean() > 0.5
    assert np.abs(control - prompt).mean() > 0.5


def test_controlnet_is_more_important_differs_only_through_guidance(studio) -> None:
    # without classifier-free guidance there is no unconditional half to leave out
    prompt = _control(studio, guidance=1.0, control_mode="prompt")
    control = _control(studio, guidance=1.0, control_mode="control")
    assert np.array_equal(prompt, control)


def test_control_mode_hooks_are_gone_after_the_call(studio) -> None:
    _control(studio, control_mode="control")
    net = studio.registry.component("controlnet:canny")
    assert not net._forward_hooks


def test_one_controlnet_with_two_modes_is_refused(studio) -> None:
    units = [{"type": "canny", "image": _sketch(), "control_mode": "prompt"},
             {"type": "canny", "image": _sketch(), "control_mode": "balanced"}]
    with pytest.raises(RequestError, match="give them one control mode"):
        studio.control({**BASE, "units": units})
    with pytest.raises(RequestError, match="unknown control_mode 'loud'"):
        studio.control({**BASE, "units": [{"type": "canny", "image": _sketch(),
                                           "control_mode": "loud"}]})
    assert not studio.registry.component("controlnet:canny")._forward_hooks
