"""The Auto-Photoshop-StableDiffusion plugin, replayed: it reads the options, models,
samplers, embeddings and LoRAs for its menus, sends every number as a string
(`"seed": "-1"`, `"steps": "20"`), uses `sampler_index`, inpaints with img2img (`mask`,
`inpainting_fill`, `inpaint_full_res`), and polls /progress?skip_current_image=false for its
progress bar and live image while a job runs. Written from its documented behaviour, not its
code."""

from __future__ import annotations

import numpy as np
import requests
from PIL import Image

from tests.support.a1111 import api, b64, info, pixels, png, while_running

STRINGS = {"prompt": "a red circle", "negative_prompt": "", "seed": "5", "steps": "2",
           "cfg_scale": "7", "width": "64", "height": "64", "batch_size": 1, "n_iter": 1,
           "sampler_index": "Euler a", "restore_faces": False, "denoising_strength": "0.7"}


def test_menus(app_url):
    for route in ("/sdapi/v1/options", "/sdapi/v1/sd-models", "/sdapi/v1/samplers",
                  "/sdapi/v1/embeddings", "/sdapi/v1/loras", "/sdapi/v1/hypernetworks",
                  "/controlnet/version", "/controlnet/model_list"):
        assert requests.get(api(app_url, route), timeout=30).status_code == 200, route
    embeddings = requests.get(api(app_url, "/sdapi/v1/embeddings"), timeout=30).json()
    assert set(embeddings) == {"loaded", "skipped"}


def test_numbers_as_strings_are_read_as_a1111_reads_them(app_url):
    as_numbers = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60, json={
        **STRINGS, "seed": 5, "steps": 2, "cfg_scale": 7, "width": 64, "height": 64.0})
    as_strings = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60, json=STRINGS)
    assert as_numbers.status_code == as_strings.status_code == 200
    assert np.array_equal(pixels(as_numbers), pixels(as_strings))
    assert info(as_strings)["seed"] == 5
    random = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60,
                           json={**STRINGS, "seed": "-1"})
    assert random.status_code == 200 and info(random)["seed"] >= 0
    half = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60,
                         json={**STRINGS, "steps": "2.5"})
    assert half.status_code == 422 and "steps must be a whole number" in half.text


def test_inpainting_a_selection(app_url):
    photo = Image.new("RGB", (64, 64), (200, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    body = {**STRINGS, "init_images": [b64(photo)], "mask": b64(mask.convert("RGB")),
            "mask_blur": "4", "inpainting_fill": "1", "inpaint_full_res": False,
            "inpaint_full_res_padding": "32", "inpainting_mask_invert": "0",
            "denoising_strength": "1"}
    answer = requests.post(api(app_url, "/sdapi/v1/img2img"), timeout=120, json=body)
    assert answer.status_code == 200, answer.text
    out = pixels(answer)
    assert np.array_equal(out[:8, :8], np.asarray(photo, np.int16)[:8, :8])  # outside kept
    assert np.abs(out[28:36, 28:36] - np.asarray(photo, np.int16)[28:36, 28:36]).mean() > 5


def test_progress_while_generating(app_url):
    def post() -> requests.Response:
        return requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=120,
                             json={**STRINGS, "steps": "12", "n_iter": "2"})

    def poll() -> dict:
        return requests.get(api(app_url, "/sdapi/v1/progress"), timeout=30,
                            params={"skip_current_image": "false"}).json()

    answer, polled = while_running(post, poll)
    assert answer.status_code == 200 and len(answer.json()["images"]) == 2
    assert all(0 <= p["progress"] <= 1 and "job_count" in p["state"] for p in polled)
    assert any(p["state"]["job_count"] == 1 and p["progress"] > 0 for p in polled)
    images = [p["current_image"] for p in polled if p["current_image"]]
    assert all(png(v).size[0] > 0 for v in images)
