"""Remix (IP-Adapter variations, interpolation, text diffs) on the tiny set: wiring, the
embedding maths, the shared UNet left exactly as it was, reproducibility and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from studio.backend.common import Cancelled, CancelToken
from studio.backend.requests import RequestError
from studio.backend.tasks.remix import RemixRequest, parse_weights
from studio.backend.tasks.remix_space import interpolate, slerp, spherical_mean, text_diff

BASE = {"prompt": "a cat", "seed": 5, "steps": 3, "width": 64, "height": 64}


def px(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def picture(colour: tuple[int, int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.full((48, 48, 3), colour, np.uint8)
    arr[10:30, 12:36] = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
    return Image.fromarray(arr)


RED, BLUE, GREEN = picture((220, 20, 20), 1), picture((20, 20, 220), 2), picture((20, 200, 20), 3)


def unet_state(studio) -> tuple[dict, object, object]:
    unet = studio.registry.component("unet")
    return (dict(unet.attn_processors), unet.encoder_hid_proj,
            unet.config.encoder_hid_dim_type)


def assert_clean(studio, before) -> None:
    procs, proj, kind = unet_state(studio)
    assert procs.keys() == before[0].keys()
    assert all(procs[k] is v for k, v in before[0].items())
    assert proj is None and kind is None
    assert "encoder_hid_proj" not in studio.registry.component("unet")._modules


# ----------------------------------------------------------------------------- maths
def test_slerp_ends_and_middle_stay_on_the_sphere():
    a, b = torch.randn(16), torch.randn(16)
    assert torch.allclose(slerp(a, b, 0), a / a.norm(), atol=1e-6)
    assert torch.allclose(slerp(a, b, 1), b / b.norm(), atol=1e-6)
    assert abs(float(slerp(a, b, 0.3).norm()) - 1) < 1e-5


def test_interpolation_ends_are_the_inputs_and_norm_is_kept():
    torch.manual_seed(0)
    e = torch.randn(3, 16) * torch.tensor([[1.0], [2.0], [3.0]])
    assert torch.equal(interpolate(e, torch.tensor([0.0, 1.0, 0.0])), e[1])
    mid = interpolate(e[:2], torch.tensor([1.0, 1.0]))
    assert abs(float(mid.norm()) - float(e[:2].norm(dim=1).mean())) < 1e-4
    # two vectors: the spherical mean is slerp; three: equidistant-ish from each
    assert torch.allclose(spherical_mean(e[:2], torch.tensor([1.0, 3.0])),
                          slerp(e[0], e[1], 0.75), atol=1e-5)
    # three: the Karcher mean, where the weighted tangent vectors towards the inputs cancel
    w = torch.tensor([1.0, 2.0, 0.5])
    m = spherical_mean(e, w)
    v = torch.nn.functional.normalize(e, dim=1)
    dot = (v @ m).clamp(-1, 1)
    logs = (v - dot[:, None] * m) * (torch.arccos(dot) / torch.sin(torch.arccos(dot)))[:, None]
    assert float((w[:, None] * logs).sum(0).norm()) < 1e-4
    assert abs(float(m.norm()) - 1) < 1e-5


def test_text_diff_moves_towards_the_caption_direction():
    torch.manual_seed(1)
    image, t_from, t_to = torch.randn(16), torch.randn(16), torch.randn(16)
    direction = (t_to - t_from) / (t_to - t_from).norm()
    assert torch.equal(text_diff(image, t_from, t_to, 0.0), image)
    cosines = [float(torch.cosine_similarity(text_diff(image, t_from, t_to, a), direction, 0))
               for a in (0.0, 0.3, 0.6, 1.0)]
    assert cosines == sorted(cosines) and cosines[-1] > 0.999
    assert abs(float(text_diff(image, t_from, t_to, 0.5).norm()) - float(image.norm())) < 1e-4


# ----------------------------------------------------------------------------- the task
def test_zero_image_scale_equals_text_to_image(studio):
    plain = studio.txt2img(dict(BASE)).image
    zero = studio.run("remix", {**BASE, "images": [RED], "image_scale": 0.0})
    assert np.array_equal(px(zero.image), px(plain))
    variation = studio.run("remix", {**BASE, "images": [RED]})
    assert not np.array_equal(px(variation.image), px(plain))


def test_the_picture_matters(studio):
    red = studio.run("remix", {**BASE, "images": [RED]}).image
    blue = studio.run("remix", {**BASE, "images": [BLUE]}).image
    assert np.abs(px(red) - px(blue)).mean() > 0.5


def test_one_sided_weights_give_that_picture_and_the_blend_differs(studio):
    red = studio.run("remix", {**BASE, "images": [RED]})
    blue = studio.run("remix", {**BASE, "images": [BLUE]})
    ends = [studio.run("remix", {**BASE, "images": [RED, BLUE], "weights": w})
            for w in ("[1, 0]", [0, 1])]
    assert np.array_equal(px(ends[0].image), px(red.image))
    assert np.array_equal(px(ends[1].image), px(blue.image))
    mid = studio.run("remix", {**BASE, "images": [RED, BLUE, GREEN]})
    assert mid.info["weights"] == pytest.approx([1 / 3] * 3)
    assert not np.array_equal(px(mid.image), px(red.image))


def test_text_diff_changes_the_image_and_zero_amount_does_not(studio):
    plain = studio.run("remix", {**BASE, "images": [RED]})
    diff = {"text_from": "a red cat", "text_to": "a blue cat"}
    moved = studio.run("remix", {**BASE, "images": [RED], **diff, "text_amount": 0.6})
    still = studio.run("remix", {**BASE, "images": [RED], **diff, "text_amount": 0.0})
    assert moved.info["text_diff_cosine"] < 0.999
    assert not np.array_equal(px(moved.image), px(plain.image))
    assert np.array_equal(px(still.image), px(plain.image))


def test_remix_regenerates_bit_identically_from_its_saved_inputs(studio):
    first = studio.run("remix", {**BASE, "images": [RED, BLUE], "weights": [0.3, 0.7],
                                 "text_from": "a red cat", "text_to": "a blue cat",
                                 "prompt": "", "image_scale": 0.8})
    stored = first.info["request"]["images"]
    assert all(isinstance(name, str) and name.endswith(".png") for name in stored)
    again = studio.regenerate(str(first.path))
    assert np.array_equal(px(first.image), px(again.image))
    parameters = Image.open(first.path).info["parameters"]
    assert "Task: remix" in parameters and "weights [0.3, 0.7] scale 0.8" in parameters


def test_fast_mode_remix_runs_in_few_steps(studio):
    out = studio.run("remix", {**BASE, "images": [RED], "fast": True, "steps": 20})
    assert out.info["steps_run"] == 4 and out.info["guidance_run"] == 1.0


def test_every_other_tab_is_bit_identical_after_a_remix(studio):
    canny = Image.new("RGB", (64, 64))
    canny.paste((255, 255, 255), (16, 16, 48, 48))
    mask = Image.new("L", (64, 64))
    mask.paste(255, (16, 16, 48, 48))
    calls = {
        "txt2img": dict(BASE),
        "prompt_edit": {**BASE, "edited_prompt": "a dog"},
        "control": {**BASE, "units": [{"type": "canny", "image": canny}]},
        "layout": {**BASE, "boxes": [{"phrase": "a cat", "box": [0.1, 0.1, 0.6, 0.6]}],
                   "gligen_fraction": 0.5},
        "inpaint": {**BASE, "image": RED.resize((64, 64)), "mask": mask},
        "instruct": {**BASE, "image": RED.resize((64, 64)), "prompt": "make it blue"},
    }
    before = {task: px(studio.run(task, dict(req)).image) for task, req in calls.items()}
    state = unet_state(studio)
    studio.run("remix", {**BASE, "images": [RED, BLUE], "text_from": "a", "text_to": "b"})
    assert_clean(studio, state)
    for task, req in calls.items():
        assert np.array_equal(px(studio.run(task, dict(req)).image), before[task]), task


def test_a_cancelled_or_failed_remix_restores_the_unet(studio, monkeypatch):
    plain = px(studio.txt2img(dict(BASE)).image)
    state = unet_state(studio)
    token = CancelToken()

    def progress(step: int, total: int) -> None:
        if step == 2:
            token.cancel()

    with pytest.raises(Cancelled):
        studio.run("remix", {**BASE, "images": [RED], "steps": 5}, progress=progress,
                   cancel=token)
    assert_clean(studio, state)
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(IPAdapterAttnProcessor2_0, "__call__", broken)
    with pytest.raises(RuntimeError, match="boom"):
        studio.run("remix", {**BASE, "images": [RED]})
    assert_clean(studio, state)
    monkeypatch.undo()
    assert np.array_equal(px(studio.txt2img(dict(BASE)).image), plain)


def test_adapter_processors_are_built_once(fresh_studio):
    fresh_studio.run("remix", {**BASE, "images": [RED]})
    loads = dict(fresh_studio.registry.stats)
    fresh_studio.run("remix", {**BASE, "images": [BLUE]})
    assert {k: v for k, v in fresh_studio.registry.stats.items() if k.startswith("load")} == \
        {k: v for k, v in loads.items() if k.startswith("load")}


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("change", "message"), [
    ({"images": []}, "0 images given; Remix takes 1 to 4"),
    ({"images": [RED] * 5}, "5 images given"),
    ({"weights": [1]}, "weights has 1 number but 2 images were given"),
    ({"weights": [1, -1]}, "weight 2 is -1; weights must be 0 or more"),
    ({"weights": [0, 0]}, "all weights are 0"),
    ({"weights": "[1, x]"}, "weights must be a JSON list"),
    ({"weights": [1, float("nan")]}, "weight 2 must be a finite number"),
    ({"weights": {"a": 1}}, "weights must be a list of numbers"),
    ({"text_amount": 1.5}, "text_amount must be between 0 and 1"),
    ({"text_from": "a red cat"}, "only text_from is given"),
    ({"text_to": "a blue cat"}, "only text_to is given"),
    ({"image_scale": 2}, "image_scale must be between 0 and 1.5"),
    ({"images": ["/etc/passwd", RED]}, "image 1"),
])
def test_bad_remix_requests_are_refused_clearly(studio, change, message):
    req = RemixRequest(**{**BASE, "images": [RED, BLUE], **change})
    with pytest.raises(RequestError, match=message.replace("[", r"\[")):
        req.validate()
    # and through the studio: refused before any model work
    with pytest.raises(RequestError):
        studio.run("remix", {**BASE, "images": [RED, BLUE], **change})


def test_after_a_refused_remix_the_next_one_works(studio):
    with pytest.raises(RequestError):
        studio.run("remix", {**BASE, "images": [RED, BLUE], "weights": [0, 0]})
    assert studio.run("remix", {**BASE, "images": [RED]}).image.size == (64, 64)


def test_parse_weights_defaults_to_equal():
    assert parse_weights("", 3) == [1.0, 1.0, 1.0]
    assert parse_weights(None, 2) == [1.0, 1.0]
    assert parse_weights("[2, 0.5]", 2) == [2.0, 0.5]


def test_a_model_set_without_an_adapter_says_so(fresh_studio):
    from dataclasses import replace

    from studio.backend.common import StudioError
    from studio.backend.service import Studio

    ms = fresh_studio.model_set
    studio = Studio(fresh_studio.settings, model_set=replace(ms, repos={
        k: v for k, v in ms.repos.items() if k != "ip_adapter"}))
    with pytest.raises(StudioError, match="Remix needs an IP-Adapter"):
        studio.run("remix", {**BASE, "images": [RED]})


# ----------------------------------------------------------------------------- Control
def control_request(**extra) -> dict:
    edges = Image.new("RGB", (64, 64))
    edges.paste((255, 255, 255), (20, 20, 44, 44))
    return {**BASE, "units": [{"type": "canny", "image": edges}], **extra}


def test_reference_pictures_steer_the_control_tab(studio):
    plain = studio.control(control_request())
    state = unet_state(studio)
    zero = studio.control(control_request(reference_images=[RED], reference_scale=0.0))
    assert np.array_equal(px(zero.image), px(plain.image))
    styled = studio.control(control_request(reference_images=[RED, BLUE],
                                            reference_scale=1.0))
    assert styled.info["references"] == 2
    assert not np.array_equal(px(styled.image), px(plain.image))
    assert len(styled.info["request"]["reference_images"]) == 2
    assert_clean(studio, state)
    again = studio.regenerate(str(styled.path))
    assert np.array_equal(px(again.image), px(styled.image))
    assert np.array_equal(px(studio.control(control_request()).image), px(plain.image))


@pytest.mark.parametrize(("extra", "message"), [
    ({"reference_images": [RED] * 5}, "5 reference images given; at most 4"),
    ({"reference_images": [RED], "reference_scale": 3}, "reference_scale must be between"),
    ({"reference_images": ["nope.png"]}, "reference image 1"),
])
def test_bad_reference_pictures_are_refused(studio, extra, message):
    with pytest.raises(RequestError, match=message):
        studio.control(control_request(**extra))
