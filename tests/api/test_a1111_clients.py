"""The A1111 API's settings and menus that every client meets: schedules (A1111's
"Schedule type"), clip skip through /options and `override_settings`, what cannot be honoured
refused by name, the routes clients read to draw their menus, and the batch limit. Each
client's own call sequence is replayed in tests/api/clients/."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image

SMALL = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "cfg_scale": 7}


def api(app_url: str, route: str) -> str:
    return app_url.rstrip("/") + route


def b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def pixels(answer: requests.Response, index: int = 0) -> np.ndarray:
    raw = base64.b64decode(answer.json()["images"][index])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), np.int16)


@pytest.mark.parametrize(("payload", "fragment"), [
    ({"sampler_name": "Euler a", "scheduler": "Karras"},
     "sampler Euler a has no karras schedule; use Euler, DPM++ 2M"),
    ({"sampler_name": "DDIM", "scheduler": "align_your_steps"}, "cannot take the Align"),
    ({"scheduler": "polyexponential"}, "diffusers' samplers cannot express it"),
    ({"scheduler": "kl_optimal"}, "diffusers' samplers cannot express it"),
    ({"scheduler": "wobbly"}, "unknown scheduler 'wobbly'"),
    ({"override_settings": {"CLIP_stop_at_last_layers": 0}}, "CLIP_stop_at_last_layers"),
    ({"override_settings": {"sd_model_checkpoint": "other.safetensors"}},
     "sd_model_checkpoint 'other.safetensors' is not a model of this server; it has: tiny"),
    ({"override_settings": {"sd_vae": "vae-ft-mse.safetensors"}}, "override_settings.sd_vae"),
    ({"override_settings": "clip skip 2"}, "override_settings must be an object"),
    ({"CLIP_stop_at_last_layers": 2}, None),  # an option key in a txt2img body: ignored
    ({"override_settings": {"sd_vae": "Automatic", "live_previews_enable": False}}, None),
])
def test_schedules_and_settings_the_studio_cannot_follow_are_refused_by_name(
        app_url, payload, fragment):
    answer = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60,
                           json={**SMALL, **payload})
    if fragment is None:
        assert answer.status_code == 200
    else:
        assert answer.status_code == 422 and fragment in answer.json()["detail"]


@pytest.mark.parametrize(("scheduler", "sampler"), [
    ("karras", "Euler"), ("exponential", "DPM++ 2M"), ("beta", "UniPC"),
    ("sgm_uniform", "Euler a"), ("align_your_steps", "DPM++ 2M"),
])
def test_a1111_schedules_change_the_image(app_url, scheduler, sampler):
    body = {**SMALL, "seed": 21, "steps": 3, "sampler_name": sampler}
    plain = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60, json=body)
    scheduled = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60,
                              json={**body, "scheduler": scheduler})
    assert scheduled.status_code == 200, scheduled.text
    assert np.abs(pixels(scheduled) - pixels(plain)).mean() > 0.5


def test_sd_model_checkpoint_switches_the_apis_model_as_a1111_does(app_url):
    titles = {m["model_name"]: m["title"] for m in requests.get(
        api(app_url, "/sdapi/v1/sd-models"), timeout=30).json()}
    # "name [short hash]" as A1111 (a built-in set's hash is known once it has been built)
    assert titles["tiny"].startswith("tiny [") and titles["tiny-xl"].startswith("tiny-xl")
    body = {**SMALL, "seed": 4}
    try:
        assert requests.post(api(app_url, "/sdapi/v1/options"), timeout=30, json={
            "sd_model_checkpoint": titles["tiny-xl"]}).status_code == 200
        got = requests.get(api(app_url, "/sdapi/v1/options"), timeout=30).json()
        assert got["sd_model_checkpoint"] == titles["tiny-xl"]
        xl = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60, json=body)
        back = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60, json={
            **body, "override_settings": {"sd_model_checkpoint": "tiny"}})
    finally:
        requests.post(api(app_url, "/sdapi/v1/options"), timeout=30,
                      json={"sd_model_checkpoint": "tiny"})
    assert json.loads(xl.json()["info"])["sd_model_name"] == "tiny-xl"
    assert "Model: tiny-xl" in Image.open(io.BytesIO(base64.b64decode(
        xl.json()["images"][0]))).text["parameters"]
    assert json.loads(back.json()["info"])["sd_model_name"] == "tiny"
    plain = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60, json=body)
    assert np.array_equal(pixels(back), pixels(plain))
    assert not np.array_equal(pixels(xl), pixels(plain))
    unknown = requests.post(api(app_url, "/sdapi/v1/options"), timeout=30,
                            json={"sd_model_checkpoint": "sd_xl_base_1.0.safetensors"})
    assert unknown.status_code == 422 and titles["tiny"] in unknown.json()["detail"]


def test_clip_skip_from_options_applies_to_later_requests(app_url):
    body = {**SMALL, "seed": 8}
    plain = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60, json=body)
    try:
        assert requests.post(api(app_url, "/sdapi/v1/options"), timeout=30,
                             json={"CLIP_stop_at_last_layers": "2"}).status_code == 200
        got = requests.get(api(app_url, "/sdapi/v1/options"), timeout=30).json()
        assert got["CLIP_stop_at_last_layers"] == 2
        skipped = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60, json=body)
        overridden = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60, json={
            **body, "override_settings": {"CLIP_stop_at_last_layers": 1}})
    finally:
        requests.post(api(app_url, "/sdapi/v1/options"), timeout=30,
                      json={"CLIP_stop_at_last_layers": 1})
    assert np.abs(pixels(skipped) - pixels(plain)).mean() > 0.5
    assert np.array_equal(pixels(overridden), pixels(plain))


def test_options_take_back_what_get_gave_and_ignore_the_rest(app_url):
    got = requests.get(api(app_url, "/sdapi/v1/options"), timeout=30).json()
    sent = requests.post(api(app_url, "/sdapi/v1/options"), timeout=30,
                         json={**got, "inpainting_mask_weight": 1, "live_previews_enable": True})
    assert sent.status_code == 200
    clip = requests.post(api(app_url, "/sdapi/v1/options"), timeout=30,
                         json={"CLIP_stop_at_last_layers": 13})
    assert clip.status_code == 422 and "CLIP_stop_at_last_layers" in clip.json()["detail"]
    vae = requests.post(api(app_url, "/sdapi/v1/options"), timeout=30,
                        json={"sd_vae": "other.safetensors"})
    assert vae.status_code == 422 and vae.json()["detail"].startswith("sd_vae")


@pytest.mark.parametrize(("method", "route", "expected"), [
    ("get", "/sdapi/v1/sd-vae", []), ("get", "/sdapi/v1/sd-modules", []),
    ("get", "/sdapi/v1/prompt-styles", []), ("get", "/internal/ping", {}),
    ("post", "/sdapi/v1/refresh-checkpoints", None),
])
def test_the_routes_clients_call_for_their_menus(app_url, method, route, expected):
    answer = getattr(requests, method)(api(app_url, route), timeout=30)
    assert answer.status_code == 200 and answer.json() == expected
    memory = requests.get(api(app_url, "/sdapi/v1/memory"), timeout=30).json()
    assert memory["ram"]["used"] > 0 and "cuda" in memory
    flags = requests.get(api(app_url, "/sdapi/v1/cmd-flags"), timeout=30).json()
    assert flags["api"] is True and flags["api_auth"] is False


@pytest.mark.slow
def test_eight_by_eight_images_fit_the_batch_limit(app_url):
    answer = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=300, json={
        **SMALL, "steps": 1, "seed": 1, "batch_size": 8, "n_iter": 8})
    assert answer.status_code == 200 and len(answer.json()["images"]) == 64
    assert json.loads(answer.json()["info"])["all_seeds"][-1] == 64
