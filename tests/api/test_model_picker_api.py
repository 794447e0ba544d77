"""The model choice on the named API: `/models` lists the names, every generating endpoint
takes the trailing optional `model`, a job runs on the one it names (the default otherwise),
and a path or an unknown name is refused with a clear message while the server keeps
serving."""

from __future__ import annotations

import json

import pytest
from gradio_client.exceptions import AppError

from studio.backend.tasks import TASKS, generating_tasks

SMALL = {"prompt": "a red circle", "seed": 9, "steps": 2, "width": 64, "height": 64}


def test_models_lists_names_families_and_sources(client):
    listed = json.loads(client.predict(api_name="/models"))
    assert listed[0] == {"name": "tiny", "family": "sd15", "source": "builtin"}
    assert {"name": "tiny-xl", "family": "sdxl", "source": "builtin"} in listed
    assert all(set(m) == {"name", "family", "source"} for m in listed)


def test_every_generating_endpoint_ends_with_an_optional_model(client):
    """... followed, on the tasks with hires fix, by its optional `hires_*` (upscaling runs
    no checkpoint: it has no `model`)."""
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    names = [t.name for t in generating_tasks() if t.name not in ("regenerate", "upscale")]
    hires = ["hires_scale", "hires_upscaler", "hires_denoise", "hires_steps", "hires_prompt"]
    for name in dict.fromkeys([*names, "prompt_edit"]):
        if f"/{name}" not in api:
            continue
        params = api[f"/{name}"]["parameters"]
        trailing = hires if name in ("txt2img", "control", "layout") else []
        last = params[-1 - len(trailing)]
        assert last["parameter_name"] == "model" and last["parameter_has_default"], name
        assert [p["parameter_name"] for p in params[len(params) - len(trailing):]] == trailing
        assert all(p["parameter_has_default"] for p in params[len(params) - len(trailing):])
    assert "models" in TASKS


def test_a_job_runs_on_the_model_it_names(client):
    _, xl = client.predict(**SMALL, model="tiny-xl", api_name="/txt2img")
    _, plain = client.predict(**SMALL, api_name="/txt2img")
    _, empty = client.predict(**SMALL, model="", api_name="/txt2img")
    assert json.loads(xl)["model"] == "tiny-xl"
    assert json.loads(plain)["model"] == json.loads(empty)["model"] == "tiny"


@pytest.mark.parametrize(("model", "fragment"), [
    ("/etc/passwd", "looks like a path"),
    ("../../secret.safetensors", "looks like a path"),
    ("no-such-model", "unknown model 'no-such-model'; this server has: tiny"),
])
def test_paths_and_unknown_names_are_refused(client, model, fragment):
    with pytest.raises(AppError, match=None) as err:
        client.predict(**SMALL, model=model, api_name="/txt2img")
    assert fragment in str(err.value)
    _, info = client.predict(**SMALL, api_name="/txt2img")  # the server keeps serving
    assert json.loads(info)["seed"] == 9


def test_layout_on_an_sdxl_model_says_why_not(client):
    boxes = json.dumps([{"phrase": "a red circle", "box": [0.1, 0.1, 0.6, 0.6]}])
    with pytest.raises(AppError, match="layout is not available for SDXL"):
        client.predict(**SMALL, boxes=boxes, model="tiny-xl", api_name="/layout")
