"""Hires fix and upscalers through both APIs on a served tiny studio: the trailing
`hires_*` parameters of /txt2img, /upscale, and A1111's enable_hr / hr_* fields,
GET /sdapi/v1/upscalers and POST /sdapi/v1/extra-single-image."""

from __future__ import annotations

import json

import numpy as np
import requests
from gradio_client import handle_file
from PIL import Image

from tests.api.clients.test_sillytavern import DEFAULTS, EMPTY_AUTH
from tests.support.a1111 import api, b64, info, png
from tests.support.upscalers import RANDOM_UPSCALER

HIRES = ["model", "hires_scale", "hires_upscaler", "hires_denoise", "hires_steps",
         "hires_prompt"]


def test_the_hires_parameters_trail_model_and_are_optional(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/txt2img", "/control", "/layout"):
        params = endpoints[name]["parameters"]
        assert [p["parameter_name"] for p in params][-len(HIRES):] == HIRES, name
        assert all(p["parameter_has_default"] for p in params[-len(HIRES):]), name
    upscale = [p["parameter_name"] for p in endpoints["/upscale"]["parameters"]]
    assert upscale == ["image", "scale", "upscaler"]


def test_txt2img_hires_and_upscale_through_gradio_client(client, tmp_path):
    image, text = client.predict(prompt="a red circle", seed=2, steps=2, width=64, height=64,
                                 hires_scale=1.5, hires_upscaler="lanczos",
                                 api_name="/txt2img")
    assert Image.open(image).size == (96, 96)
    assert json.loads(text)["hires"]["first_size"] == [64, 64]
    source = tmp_path / "small.png"
    Image.new("RGB", (24, 20), (200, 30, 30)).save(source)
    big, text = client.predict(image=handle_file(str(source)), scale=2,
                               upscaler=RANDOM_UPSCALER, api_name="/upscale")
    assert Image.open(big).size == (48, 40)
    assert json.loads(text)["upscaler"] == RANDOM_UPSCALER


def test_sillytavern_with_hires_fix_on(app_url):
    """Its default request with its hires switch on (it sends `hr_additional_modules`,
    unknown here, ignored): the image comes at 2x, with A1111's infotext."""
    answer = requests.post(api(app_url, "/sdapi/v1/txt2img"), headers=EMPTY_AUTH, timeout=120,
                           json={**DEFAULTS, "enable_hr": True, "hr_second_pass_steps": 2})
    assert answer.status_code == 200, answer.text
    image = png(answer.json()["images"][0])
    assert image.size == (128, 128)
    text = image.text["parameters"]
    for part in ("Size: 64x64", "Hires upscale: 2", "Hires upscaler: latent",
                 "Hires steps: 2", "Denoising strength: 0.7"):
        assert part in text
    assert info(answer)["seed"] == 11


def test_a1111_hr_resize_and_upscaler_models(app_url):
    resized = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=120, json={
        **DEFAULTS, "enable_hr": True, "hr_resize_x": 96, "hr_upscaler": "Lanczos",
        "hr_second_pass_steps": 2, "hr_prompt": "a blue circle"})
    assert resized.status_code == 200, resized.text
    image = png(resized.json()["images"][0])
    assert image.size == (96, 96) and "Hires prompt: a blue circle" in image.text["parameters"]
    listed = requests.get(api(app_url, "/sdapi/v1/upscalers"), timeout=30).json()
    names = [u["name"] for u in listed]
    assert names[:3] == ["None", "Lanczos", "Nearest"] and RANDOM_UPSCALER in names
    model = next(u for u in listed if u["name"] == RANDOM_UPSCALER)
    assert model == {"name": RANDOM_UPSCALER, "model_name": RANDOM_UPSCALER,
                     "model_path": None, "model_url": None, "scale": 2}
    assert all(u["model_path"] is None for u in listed)  # no server path ever


def test_a1111_extra_single_image(app_url):
    rng = np.random.default_rng(4)
    picture = Image.fromarray(rng.integers(0, 255, (30, 40, 3), np.uint8))
    answer = requests.post(api(app_url, "/sdapi/v1/extra-single-image"), timeout=120, json={
        "image": b64(picture), "resize_mode": 0, "upscaling_resize": 2,
        "upscaler_1": RANDOM_UPSCALER, "upscaler_2": "None",
        "extras_upscaler_2_visibility": 0, "gfpgan_visibility": 0})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert png(body["image"]).size == (80, 60)
    assert f"Postprocess upscaler: {RANDOM_UPSCALER}" in body["html_info"]
    refused = requests.post(api(app_url, "/sdapi/v1/extra-single-image"), timeout=60, json={
        "image": b64(picture), "upscaling_resize": 2, "upscaler_1": "pickled-esrgan"})
    assert refused.status_code == 422 and "safetensors" in refused.json()["detail"]
