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
