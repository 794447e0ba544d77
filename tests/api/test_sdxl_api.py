"""An SDXL studio (tiny-xl) through gradio_client, as scripts use it: the same endpoints,
SDXL images, and a clear refusal, naming the reason, for what SDXL cannot do."""

from __future__ import annotations

import json

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageDraw

from studio.backend.outputs import read_metadata

SMALL = {"prompt": "a red circle", "seed": 4, "steps": 2, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def client(xl_app_url) -> Client:
    return Client(xl_app_url, verbose=False)


def test_txt2img_and_control_on_sdxl(client, tmp_path):
    path, info = client.predict(**SMALL, api_name="/txt2img")
    info = json.loads(info)
    assert info["model"] == "tiny-xl" and Image.open(path).size == (64, 64)
    _, stored = read_metadata(Image.open(path))
    assert stored["request"]["prompt"] == "a red circle"
    sketch = tmp_path / "sketch.png"
    img = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(img).rectangle((10, 10, 50, 50), outline="white", width=3)
    img.save(sketch)
    path, info = client.predict(**SMALL, images=[handle_file(str(sketch))],
                                units=json.dumps([{"type": "scribble"}]), api_name="/control")
    assert json.loads(info)["task"] == "control"


def test_layout_on_sdxl_is_refused_with_the_reason_and_the_next_call_works(client):
    boxes = json.dumps([{"phrase": "a cat", "box": [0.1, 0.1, 0.5, 0.5]}])
    with pytest.raises(AppError, match="layout is not available for SDXL models: GLIGEN has "
                                       "no SDXL weights"):
        client.predict(**SMALL, boxes=boxes, api_name="/layout")
    path, _ = client.predict(**SMALL, api_name="/txt2img")
    assert Image.open(path).size == (64, 64)


def test_controlnet_union_from_gradio_client_and_the_a1111_api(client, xl_app_url, tmp_path):
    """A unit's `model: "union"` on /control; on the A1111 API, a unit naming the union
    model with a module saying the map's type (as the ControlNet extension sends it)."""
    import base64
    import io

    import httpx

    sketch = tmp_path / "sketch.png"
    img = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(img).rectangle((10, 10, 50, 50), outline="white", width=3)
    img.save(sketch)
    _, info = client.predict(**SMALL, images=[handle_file(str(sketch))],
                             units=json.dumps([{"type": "scribble", "model": "union"}]),
                             api_name="/control")
    assert json.loads(info)["request"]["units"][0]["model"] == "union"

    url = xl_app_url.rstrip("/")
    listed = httpx.get(url + "/controlnet/model_list", timeout=30).json()["model_list"]
    assert "controlnet-union" in listed
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    unit = {"model": "controlnet-union [0123abcd]", "module": "canny",
            "image": base64.b64encode(buf.getvalue()).decode(), "processor_res": 64}
    answer = httpx.post(url + "/sdapi/v1/txt2img", timeout=120, json={
        "prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 4,
        "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["images"]
    refused = httpx.post(url + "/sdapi/v1/txt2img", timeout=120, json={
        "prompt": "a red circle", "steps": 2, "width": 64, "height": 64,
        "alwayson_scripts": {"controlnet": {"args": [{**unit, "module": "none"}]}}})
    assert refused.status_code >= 400 and "name the map's type with a module" in refused.text
