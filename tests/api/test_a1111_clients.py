"""The A1111 API as popular clients call it (their request shapes and defaults, written from
their public behaviour): the Photoshop plugin's string numbers, SillyTavern's `normal`
schedule and empty login, the ControlNet extension's loose model names and discovery
routes, and what clients read to draw their menus."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw

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


def test_photoshop_plugin_numbers_as_strings_are_read_as_a1111_reads_them(app_url):
    as_numbers = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60,
                               json={**SMALL, "seed": 5})
    as_strings = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60, json={
        **SMALL, "seed": "5", "steps": "2", "cfg_scale": "7", "width": "64", "height": 64.0})
    assert as_numbers.status_code == as_strings.status_code == 200
    assert np.array_equal(pixels(as_numbers), pixels(as_strings))
    assert json.loads(as_strings.json()["info"])["seed"] == 5
    random = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60,
                           json={**SMALL, "seed": "-1"})
    assert random.status_code == 200 and json.loads(random.json()["info"])["seed"] >= 0
    half = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60,
                         json={**SMALL, "steps": 2.5})
    assert half.status_code == 422 and "steps must be a whole number" in half.text


def test_sillytavern_defaults_normal_schedule_and_an_empty_login(app_url):
    answer = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60,
                           headers={"Authorization": "Basic "},
                           json={**SMALL, "seed": 9, "sampler_name": "Euler a",
                                 "scheduler": "normal", "batch_size": 1, "n_iter": 1})
    assert answer.status_code == 200
    plain = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60,
                          json={**SMALL, "seed": 9})
    assert np.array_equal(pixels(answer), pixels(plain))  # normal = the sampler's own


@pytest.mark.parametrize(("payload", "fragment"), [
    ({"sampler_name": "Euler a", "scheduler": "Karras"}, "Karras sigmas for DPM++ 2M"),
    ({"scheduler": "exponential"}, "scheduler 'exponential' is not available here"),
    ({"CLIP_stop_at_last_layers": 2}, None),  # an option key in a txt2img body: ignored
])
def test_schedules_the_studio_cannot_follow_are_refused_by_name(app_url, payload, fragment):
    answer = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60,
                           json={**SMALL, **payload})
    if fragment is None:
        assert answer.status_code == 200
    else:
        assert answer.status_code == 422 and fragment in answer.json()["detail"]


def test_controlnet_examples_with_a_short_model_name(app_url):
    sketch = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(sketch).rectangle((10, 10, 54, 54), outline="white", width=3)
    unit = {"input_image": b64(sketch), "module": "none", "model": "canny", "weight": "1"}
    steered = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60, json={
        **SMALL, "seed": 3, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert steered.status_code == 200
    exact = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60, json={
        **SMALL, "seed": 3, "alwayson_scripts": {"controlnet": {"args": [
            {**unit, "model": "Controlnet-Canny [a1b2c3d4]", "weight": 1.0}]}}})
    assert np.array_equal(pixels(steered), pixels(exact))
    vague = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60, json={
        **SMALL, "alwayson_scripts": {"controlnet": {"args": [{**unit, "model": "control"}]}}})
    assert vague.status_code == 422 and "matches several" in vague.json()["detail"]


def test_controlnet_discovery_routes(app_url):
    settings = requests.get(api(app_url, "/controlnet/settings"), timeout=30).json()
    assert settings == {"control_net_unit_count": 3}
    modules = requests.get(api(app_url, "/controlnet/module_list"),
                           params={"alias_names": "true"}, timeout=30).json()
    assert "canny" in modules["module_list"]
    assert modules["module_detail"]["canny"]["sliders"][0]["name"] == "Preprocessor Resolution"
    assert modules["module_detail"]["none"] == {"model_free": False, "sliders": []}
    types = requests.get(api(app_url, "/controlnet/control_types"), timeout=30).json()
    canny = types["control_types"]["Canny"]
    assert canny["default_option"] == "canny" and canny["default_model"] == "controlnet-canny"


def test_options_take_back_what_get_gave_and_ignore_the_rest(app_url):
    got = requests.get(api(app_url, "/sdapi/v1/options"), timeout=30).json()
    sent = requests.post(api(app_url, "/sdapi/v1/options"), timeout=30,
                         json={**got, "inpainting_mask_weight": 1, "live_previews_enable": True})
    assert sent.status_code == 200
    clip = requests.post(api(app_url, "/sdapi/v1/options"), timeout=30,
                         json={"CLIP_stop_at_last_layers": 2})
    assert clip.status_code == 422 and "clip skip" in clip.json()["detail"]


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


def test_eight_by_eight_images_fit_the_batch_limit(app_url):
    answer = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=300, json={
        **SMALL, "steps": 1, "seed": 1, "batch_size": 8, "n_iter": 8})
    assert answer.status_code == 200 and len(answer.json()["images"]) == 64
    assert json.loads(answer.json()["info"])["all_seeds"][-1] == 64
