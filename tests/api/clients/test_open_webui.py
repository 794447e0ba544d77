"""Open WebUI's image generation with the AUTOMATIC1111 engine, replayed: it checks the
connection with GET /options, lists /sd-models, sets `sd_model_checkpoint` when the admin
picks a model, and generates with `prompt`, `batch_size`, `width` x `height` (from its
"512x512" size setting), and the steps, CFG scale, sampler and scheduler its admin panel sets.
It sends `Authorization: Basic <base64 of its API auth field>` always, `Basic ` when the
field is empty, and reads `images` (base64 PNGs) and `info` (a JSON string). Written from
its documented behaviour, not its code."""

from __future__ import annotations

import pytest
import requests

from tests.support.a1111 import api, info, png

HEADERS = {"Authorization": "Basic "}


def test_connection_check_and_model_menu(app_url):
    options = requests.get(api(app_url, "/sdapi/v1/options"), headers=HEADERS, timeout=30)
    assert options.status_code == 200
    models = requests.get(api(app_url, "/sdapi/v1/sd-models"), headers=HEADERS, timeout=30)
    titles = [m["title"] for m in models.json()]
    assert options.json()["sd_model_checkpoint"] in titles
    assert all(isinstance(m["model_name"], str) for m in models.json())
    chosen = requests.post(api(app_url, "/sdapi/v1/options"), headers=HEADERS, timeout=30,
                           json={"sd_model_checkpoint": titles[0]})
    assert chosen.status_code == 200
    other = requests.post(api(app_url, "/sdapi/v1/options"), headers=HEADERS, timeout=30,
                          json={"sd_model_checkpoint": "sdxl_base_1.0.safetensors"})
    assert other.status_code == 422 and titles[0] in other.json()["detail"]


@pytest.mark.parametrize("admin", [
    {},  # nothing set in its admin panel: only the prompt, count and size
    {"steps": 2, "cfg_scale": 7.0, "sampler_name": "Euler a", "scheduler": "Automatic"},
    {"steps": 2, "cfg_scale": 7.0, "sampler_name": "DPM++ 2M", "scheduler": "Karras"},
])
def test_generation_with_its_settings(app_url, admin):
    body = {"prompt": "a blue square", "batch_size": 2, "width": 64, "height": 64,
            "steps": 2, **admin}
    answer = requests.post(api(app_url, "/sdapi/v1/txt2img"), headers=HEADERS, timeout=120,
                           json=body)
    assert answer.status_code == 200, answer.text
    images = [png(v) for v in answer.json()["images"]]
    assert len(images) == 2 and all(i.size == (64, 64) for i in images)
    meta = info(answer)
    assert len(meta["all_seeds"]) == 2 and meta["all_seeds"][1] == meta["seed"] + 1
