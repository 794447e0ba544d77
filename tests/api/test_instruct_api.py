"""`/instruct` through gradio_client: [image, info], clear errors, and the server keeps serving."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

API = "/instruct"


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    rng = np.random.RandomState(0)
    path = tmp_path_factory.mktemp("instruct") / "photo.png"
    Image.fromarray((rng.rand(64, 128, 3) * 255).astype(np.uint8)).save(path)
    return str(path)


def _call(client, image: str, instruction: str = "make it winter", **kw):
    args = {"text_guidance": 7.5, "image_guidance": 1.5, "negative_prompt": "", "seed": 5,
            "steps": 2, "scheduler": "Euler a", "fast": False, "max_side": 128}
    args.update(kw)
    return client.predict(image=handle_file(image), instruction=instruction, **args,
                          api_name=API)


def test_endpoint_parameters_are_named(client) -> None:
    info = client.view_api(print_info=False, return_format="dict")
    params = [p["parameter_name"] for p in info["named_endpoints"][API]["parameters"]]
    assert params == ["image", "instruction", "text_guidance", "image_guidance",
                      "negative_prompt", "seed", "steps", "scheduler", "fast", "max_side",
                      "tools", "model"]
    assert len(info["named_endpoints"][API]["returns"]) == 2


def test_valid_call_returns_image_and_info(client, photo) -> None:
    image_path, info_text = _call(client, photo)
    info = json.loads(info_text)
    assert info["seed"] == 5 and info["task"] == "instruct"
    assert info["request"]["prompt"] == "make it winter"
    assert info["request"]["image_guidance_scale"] == 1.5
    assert Image.open(image_path).size == (128, 64)  # aspect of the 128x64 input kept


def test_defaults_fill_everything_but_image_and_instruction(client, photo) -> None:
    _, info_text = client.predict(image=handle_file(photo), instruction="add snow", steps=2,
                                  api_name=API)
    request = json.loads(info_text)["request"]
    assert request["guidance_scale"] == 7.5 and request["image_guidance_scale"] == 1.5
    assert request["max_side"] == 512 and request["tools"] is True
    assert (request["width"], request["height"]) == (128, 64)  # small inputs: not upscaled


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"instruction": ""}, "instruction is empty"),
        ({"image_guidance": 50}, "Image guidance"),
        ({"text_guidance": -1}, "Text guidance"),
        ({"text_guidance": "high"}, "Text guidance must be a number"),
        ({"image_guidance": 0.5}, "Image guidance: Value 0.5 is less than minimum value 1"),
        ({"max_side": 100}, "max side must be a multiple of 8"),
        ({"instruction": "mark the cat in teal"}, "'teal' is not a colour the marker knows"),
    ],
)
def test_malformed_call_gives_clear_message_then_next_call_works(client, photo, kwargs,
                                                                 message) -> None:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        _call(client, photo, **kwargs)
    _, info_text = _call(client, photo, seed=6)
    assert json.loads(info_text)["seed"] == 6


def test_non_image_upload_gives_clear_message(client, tmp_path, photo) -> None:
    from gradio_client.exceptions import AppError

    bogus = tmp_path / "notes.txt"
    bogus.write_text("not an image at all")
    with pytest.raises(AppError, match="could not be read as an image"):
        _call(client, str(bogus))
    image_path, _ = _call(client, photo, seed=7)
    assert Image.open(image_path).size == (128, 64)
