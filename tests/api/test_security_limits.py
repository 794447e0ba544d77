"""Small holes found by attacking the public studio (security round two): each request gets
a message that says what was wrong, the server keeps serving, and the README's optional
parameters really are optional."""

from __future__ import annotations

import json
import resource

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from studio.backend.requests import RequestError

SMALL = {"seed": 1, "steps": 1, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pictures") / "p.png"
    Image.new("RGB", (512, 512), (90, 30, 200)).save(path)
    return str(path)


def test_ten_thousand_sam_points_are_refused_before_any_memory_is_spent(client, picture):
    points = json.dumps([[i % 512, (i // 512) % 512, 1] for i in range(10_000)])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(AppError, match="points has 10000 clicks; at most 64"):
        client.predict(image=handle_file(picture), points=points, box="", api_name="/sam_mask")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50
    mask, _ = client.predict(image=handle_file(picture), points="[[10, 10, 1]]", box="",
                             api_name="/sam_mask")
    assert mask


@pytest.mark.parametrize(("api", "values", "message"), [
    ("/text_mask", {"text": "the dog " * 100}, "text is 800 characters long; the limit is 500"),
    ("/history", {"offset": 2**63}, "offset must be from 0 to 1000000000"),
    ("/control", {"units": "[" * 100_000 + "]" * 100_000, "prompt": "a cat", **SMALL},
     "units is nested too deeply"),
    ("/layout", {"boxes": "[" * 100_000 + "]" * 100_000, "prompt": "a cat", **SMALL},
     "boxes is nested too deeply"),
    ("/sam_mask", {"points": "[" * 100_000 + "]" * 100_000, "box": ""},
     "points is nested too deeply"),
    ("/remix", {"weights": "[" * 100_000 + "]" * 100_000, **SMALL},
     "weights is nested too deeply"),
    ("/prompt_edit", {"prompt": "a red circle", "edited_prompt": "a red circle",
                      "mode": "reweight", "reweight": "[" * 100_000 + "]" * 100_000, **SMALL},
     "reweight is nested too deeply"),
])
def test_odd_values_get_a_message_not_an_internal_error(client, picture, api, values, message):
    if api in ("/text_mask", "/sam_mask"):
        values = {**values, "image": handle_file(picture)}
    elif api in ("/remix", "/control"):
        values = {**values, "images": [handle_file(picture)]}
    with pytest.raises(AppError, match=message):
        client.predict(**values, api_name=api)
    _, info = client.predict(prompt="a cat", **SMALL, api_name="/txt2img")
    assert json.loads(info)["seed"] == 1


def test_prompt_edit_needs_only_what_the_readme_calls_required(client):
    path, info = client.predict(prompt="a red circle", edited_prompt="a blue circle", **SMALL,
                                api_name="/prompt_edit")
    info = json.loads(info)
    assert info["task"] == "prompt_edit" and info["request"]["cross_replace"] == 0.8


def test_sam_clicks_are_capped_in_the_annotator_too():
    from annotators import AnnotatorInputError
    from annotators.sam import parse_prompts

    with pytest.raises(AnnotatorInputError, match="65 clicks; at most 64"):
        parse_prompts([[1, 1, 1]] * 65, None, 10, 10)
    with pytest.raises(RequestError):
        from studio.backend.tasks.inpaint import parse_points

        parse_points([[1, 1, 1]] * 65)
