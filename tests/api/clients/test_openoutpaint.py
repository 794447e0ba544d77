"""openOutpaint, replayed: a web page served from its own origin that calls the API from the
browser (so every call carries `Origin`, and a JSON POST is preceded by a CORS preflight),
reads /cmd-flags, the models, samplers, schedulers and scripts, outpaints and inpaints with
img2img (`data:` URL images, a mask, `inpainting_fill` 1, `denoising_strength` 1), polls
/progress for its live preview, and interrupts. Written from its documented behaviour, not
its code."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import requests
from PIL import Image

from tests.support.a1111 import api, b64, info, pixels, png, while_running

ORIGIN = "http://outpaint.example:3456"


@pytest.fixture(scope="module")
def url(tiny_settings, tiny_model_set, tmp_path_factory):
    """A studio started with --cors-allow-origins for openOutpaint's page."""
    from studio.backend.service import Studio
    from tests.support.serve import launch_local

    tmp = tmp_path_factory.mktemp("openoutpaint")
    settings = replace(tiny_settings, outputs_dir=tmp / "out", concepts_dir=tmp / "c",
                       cors_allow_origins=ORIGIN)
    demo, served = launch_local(Studio(settings, model_set=tiny_model_set))
    yield served
    demo.close()


def preflight(url: str, origin: str) -> requests.Response:
    return requests.options(api(url, "/sdapi/v1/img2img"), timeout=30, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})


def test_its_page_may_call_from_its_origin(url):
    allowed = preflight(url, ORIGIN)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "content-type" in allowed.headers["access-control-allow-headers"].lower()
    got = requests.get(api(url, "/sdapi/v1/cmd-flags"), headers={"Origin": ORIGIN}, timeout=30)
    assert got.headers["access-control-allow-origin"] == ORIGIN and got.json()["api"]
    other = preflight(url, "http://elsewhere.example")
    assert "access-control-allow-origin" not in other.headers


def test_without_the_flag_other_origins_are_not_allowed(app_url):
    assert "access-control-allow-origin" not in preflight(app_url, ORIGIN).headers


def test_menus(url):
    headers = {"Origin": ORIGIN}
    for route in ("/sdapi/v1/sd-models", "/sdapi/v1/samplers", "/sdapi/v1/schedulers",
                  "/sdapi/v1/scripts", "/sdapi/v1/options", "/sdapi/v1/loras",
                  "/sdapi/v1/embeddings", "/sdapi/v1/prompt-styles"):
        answer = requests.get(api(url, route), headers=headers, timeout=30)
        assert answer.status_code == 200, route


def test_outpainting_a_canvas_edge(url):
    canvas = Image.new("RGB", (64, 64), (30, 160, 60))
    mask = Image.new("RGB", (64, 64), "black")
    mask.paste((255, 255, 255), (40, 0, 64, 64))  # the empty strip to fill
    body = {"prompt": "a yellow square", "negative_prompt": "", "seed": -1, "cfg_scale": 7,
            "sampler_name": "DPM++ 2M", "scheduler": "Automatic", "steps": 2,
            "width": 64, "height": 64, "batch_size": 2, "n_iter": 1, "styles": [],
            "init_images": [b64(canvas, data_url=True)], "mask": b64(mask, data_url=True),
            "mask_blur": 0, "inpainting_fill": 1, "inpaint_full_res": False,
            "denoising_strength": 1, "inpainting_mask_invert": 0}
    answer = requests.post(api(url, "/sdapi/v1/img2img"), headers={"Origin": ORIGIN},
                           timeout=120, json=body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    meta = info(answer)
    assert len(meta["all_seeds"]) == len(meta["infotexts"]) == 2
    out = pixels(answer)
    assert np.array_equal(out[:, :32], np.asarray(canvas, np.int16)[:, :32])


def test_live_preview_and_interrupt(url):
    stop = {"sent": False}

    def post() -> requests.Response:
        return requests.post(api(url, "/sdapi/v1/txt2img"), headers={"Origin": ORIGIN},
                             timeout=120, json={"prompt": "a red circle", "steps": 150,
                                                "width": 64, "height": 64, "seed": 4})

    def poll() -> dict:
        state = requests.get(api(url, "/sdapi/v1/progress"), headers={"Origin": ORIGIN},
                             timeout=30).json()
        if state["current_image"] and not stop["sent"]:
            stop["sent"] = True
            requests.post(api(url, "/sdapi/v1/interrupt"), headers={"Origin": ORIGIN},
                          timeout=30)
        return state

    answer, polled = while_running(post, poll)
    assert stop["sent"] and answer.status_code == 200
    images = answer.json()["images"]
    assert len(images) == 1 and png(images[0]).size == (64, 64)  # what it had
    assert any(p["current_image"] for p in polled)
