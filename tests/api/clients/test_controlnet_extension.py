"""The sd-webui-controlnet extension's API, as its own API examples and the clients built on
them call it: /controlnet/version, model_list, module_list?alias_names=true (with
`module_detail`), settings, control_types, detect, then txt2img/img2img with units under
`alwayson_scripts.controlnet.args` carrying the extension's fields (a model named as in an
A1111 install, `control_mode`, `pixel_perfect`, `processor_res`). Written from the
extension's documented behaviour, not its code."""

from __future__ import annotations

import numpy as np
import pytest
import requests
from PIL import Image

from tests.support.a1111 import api, b64, pixels, png, sketch

SMALL = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "cfg_scale": 7,
         "seed": 3}
# the extension's example unit (its field names and defaults)
UNIT = {"enabled": True, "module": "none", "model": "control_v11p_sd15_canny [d14c016b]",
        "weight": 1.0, "resize_mode": "Crop and Resize", "lowvram": False,
        "processor_res": 512, "threshold_a": 100, "threshold_b": 200, "guidance_start": 0.0,
        "guidance_end": 1.0, "control_mode": "Balanced", "pixel_perfect": False}


def generate(app_url: str, **unit) -> requests.Response:
    return requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=120, json={
        **SMALL, "alwayson_scripts": {"controlnet": {"args": [
            {**UNIT, "input_image": b64(sketch()), **unit}]}}})


def test_discovery(app_url):
    def get(route: str, **params) -> dict:
        answer = requests.get(api(app_url, route), params=params, timeout=30)
        assert answer.status_code == 200, route
        return answer.json()

    assert get("/controlnet/version")["version"] >= 2
    assert "controlnet-canny" in get("/controlnet/model_list")["model_list"]
    assert get("/controlnet/settings") == {"control_net_unit_count": 3}
    modules = get("/controlnet/module_list", alias_names="true")
    assert "canny" in modules["module_list"]
    assert modules["module_detail"]["canny"]["sliders"][0]["name"] == "Preprocessor Resolution"
    assert modules["module_detail"]["none"] == {"model_free": False, "sliders": []}
    canny = get("/controlnet/control_types")["control_types"]["Canny"]
    assert canny["default_option"] == "canny" and canny["default_model"] == "controlnet-canny"


def test_detect(app_url):
    photo = Image.new("RGB", (64, 64), "white")
    photo.paste((0, 0, 0), (16, 16, 48, 48))
    answer = requests.post(api(app_url, "/controlnet/detect"), timeout=60, json={
        "controlnet_module": "canny", "controlnet_input_images": [b64(photo)],
        "controlnet_processor_res": 64, "controlnet_threshold_a": 100,
        "controlnet_threshold_b": 200})
    assert answer.status_code == 200 and answer.json()["info"] == "Success"
    edges = np.asarray(png(answer.json()["images"][0]).convert("L"))
    assert edges[16, 16:48].max() == 255 and edges[32, 32] == 0


def test_the_examples_unit_steers_the_image(app_url):
    steered = generate(app_url)
    plain = requests.post(api(app_url, "/sdapi/v1/txt2img"), timeout=60, json=SMALL)
    assert steered.status_code == 200, steered.text
    assert np.abs(pixels(steered) - pixels(plain)).mean() > 2
    annotated = generate(app_url, module="canny", model="canny")
    assert len(annotated.json()["images"]) == 2  # the image, then the detected map


@pytest.mark.parametrize("model", ["canny", "Controlnet-Canny [a1b2c3d4]", "controlnet-canny",
                                   "control_v11p_sd15_canny"])
def test_model_names_match_as_the_extension_matches_them(app_url, model):
    assert np.array_equal(pixels(generate(app_url, model=model)), pixels(generate(app_url)))


@pytest.mark.parametrize(("model", "fragment"), [
    ("control", "matches several"),
    ("controlnet-canny-sdxl-1.0", "is for sdxl models and this server runs sd15"),
    ("t2iadapter_color", "is unknown"),
])
def test_names_that_match_nothing_or_several_are_refused(app_url, model, fragment):
    answer = generate(app_url, model=model)
    assert answer.status_code == 422 and fragment in answer.json()["detail"]


def test_each_control_mode_changes_the_image(app_url):
    balanced = pixels(generate(app_url))
    prompt = pixels(generate(app_url, control_mode="My prompt is more important"))
    control = pixels(generate(app_url, control_mode=2))
    assert np.abs(prompt - balanced).mean() > 0.5
    assert np.abs(control - balanced).mean() > 0.5
    assert np.abs(control - prompt).mean() > 0.5
    loud = generate(app_url, control_mode="Loud")
    assert loud.status_code == 422 and "control_mode" in loud.json()["detail"]


def test_pixel_perfect_picks_the_annotator_resolution(app_url):
    big = Image.new("RGB", (256, 256), "white")
    big.paste((0, 0, 0), (64, 64, 192, 192))
    unit = {"module": "canny", "model": "canny", "input_image": b64(big),
            "processor_res": 2048}
    coarse = generate(app_url, **unit).json()["images"][1]
    perfect = generate(app_url, **unit, pixel_perfect=True).json()["images"][1]
    at_64 = generate(app_url, **{**unit, "processor_res": 64}).json()["images"][1]
    assert perfect == at_64 and perfect != coarse  # 64 x 64 output: the map made at 64
