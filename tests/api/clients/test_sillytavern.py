"""SillyTavern's "Stable Diffusion WebUI (AUTOMATIC1111)" source, replayed: its server asks
for the options (its connection check), samplers, schedulers, models, VAEs, the current model,
sets the model and waits for `job_count` 0, then generates with its default request. It sends
`Authorization: Basic <base64 of its auth field>` on every call, `Basic ` when the field is
empty. Written from its documented behaviour, not its code."""

from __future__ import annotations

import base64
from dataclasses import replace

import numpy as np
import pytest
import requests

from tests.support.a1111 import api, info, pixels, png

EMPTY_AUTH = {"Authorization": "Basic "}

# SillyTavern's default generation request (its settings' defaults, sized down)
DEFAULTS = {
    "prompt": "a red circle", "negative_prompt": "lowres, bad anatomy",
    "sampler_name": "DPM++ 2M", "scheduler": "normal", "steps": 2, "cfg_scale": 7,
    "width": 64, "height": 64, "restore_faces": False, "enable_hr": False,
    "hr_upscaler": "Latent", "hr_scale": 2.0, "hr_additional_modules": [],
    "denoising_strength": 0.7, "hr_second_pass_steps": 0, "seed": 11,
    "override_settings": {"CLIP_stop_at_last_layers": 1},
    "override_settings_restore_afterwards": True, "clip_skip": 1, "save_images": False,
    "send_images": True, "do_not_save_grid": True, "do_not_save_samples": True,
}


def replay(url: str, headers: dict[str, str]) -> requests.Response:
    def get(route: str) -> requests.Response:
        answer = requests.get(api(url, route), headers=headers, timeout=30)
        assert answer.status_code == 200, (route, answer.text)
        return answer

    options = get("/sdapi/v1/options").json()  # its "connect" button
    assert {s["name"] for s in get("/sdapi/v1/samplers").json()} >= {"DPM++ 2M", "Euler a"}
    assert "normal" in {s["name"] for s in get("/sdapi/v1/schedulers").json()}
    models = get("/sdapi/v1/sd-models").json()
    assert options["sd_model_checkpoint"] in {m["title"] for m in models}
    assert all("model_name" in v for v in get("/sdapi/v1/sd-vae").json())
    chosen = requests.post(api(url, "/sdapi/v1/options"), headers=headers, timeout=30,
                           json={"sd_model_checkpoint": models[0]["title"]})
    assert chosen.status_code == 200
    assert get("/sdapi/v1/progress").json()["state"]["job_count"] == 0
    return requests.post(api(url, "/sdapi/v1/txt2img"), headers=headers, timeout=120,
                         json=DEFAULTS)


def test_default_setup_with_an_empty_auth_field(app_url):
    answer = replay(app_url, EMPTY_AUTH)
    assert answer.status_code == 200, answer.text
    image = png(answer.json()["images"][0])
    assert image.size == (64, 64) and "Steps: 2" in image.text["parameters"]
    assert info(answer)["seed"] == 11


def test_its_clip_skip_and_schedules_are_honoured(app_url):
    plain = requests.post(api(app_url, "/sdapi/v1/txt2img"), headers=EMPTY_AUTH,
                          timeout=120, json=DEFAULTS)
    skipped = requests.post(api(app_url, "/sdapi/v1/txt2img"), headers=EMPTY_AUTH,
                            timeout=120, json={**DEFAULTS, "override_settings": {
                                "CLIP_stop_at_last_layers": 2}})
    karras = requests.post(api(app_url, "/sdapi/v1/txt2img"), headers=EMPTY_AUTH,
                           timeout=120, json={**DEFAULTS, "scheduler": "karras"})
    assert plain.status_code == skipped.status_code == karras.status_code == 200
    assert np.abs(pixels(skipped) - pixels(plain)).mean() > 0.5
    assert np.abs(pixels(karras) - pixels(plain)).mean() > 0.5
    assert "Clip skip: 2" in png(skipped.json()["images"][0]).text["parameters"]
    assert "Schedule type: karras" in png(karras.json()["images"][0]).text["parameters"]


@pytest.fixture(scope="module")
def with_login(tiny_settings, tiny_model_set, tmp_path_factory):
    from studio.backend.service import Studio
    from tests.support.serve import launch_local

    tmp = tmp_path_factory.mktemp("sillytavern")
    settings = replace(tiny_settings, outputs_dir=tmp / "out", concepts_dir=tmp / "c",
                       api_auth="tavern:s3cret")
    demo, url = launch_local(Studio(settings, model_set=tiny_model_set))
    yield url
    demo.close()


def test_with_its_auth_field_filled(with_login):
    filled = {"Authorization": "Basic " + base64.b64encode(b"tavern:s3cret").decode()}
    answer = replay(with_login, filled)
    assert answer.status_code == 200, answer.text
    for headers in (EMPTY_AUTH, {"Authorization": "Basic " + base64.b64encode(
            b"tavern:wrong").decode()}):
        refused = requests.get(api(with_login, "/sdapi/v1/options"), headers=headers,
                               timeout=30)
        assert refused.status_code == 401
