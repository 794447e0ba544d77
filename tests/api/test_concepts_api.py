"""/concept_train, /concepts, /seedselect, /concept_import through gradio_client.

The session app shares one backend with other tests, so these calls never change its shared
models: training here uses SeedSelect (no weights), imports are textual inversions that no
prompt mentions, and every concept made here is deleted afterwards.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import torch
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageDraw
from safetensors.torch import save_file


class Payload:
    """A custom class: a pickle holding it cannot load with weights_only=True."""


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("concept-pictures")
    paths = []
    for i in range(3):
        img = Image.new("RGB", (80, 64), (30, 60 + 40 * i, 200))
        ImageDraw.Draw(img).rectangle((10 + 4 * i, 14, 50, 54), fill=(250, 220, 30))
        paths.append(str(root / f"pic{i}.png"))
        img.save(paths[-1])
    return paths


@pytest.fixture()
def made(studio):
    """Names of concepts a test creates; deleted afterwards so the library stays as it was."""
    names: list[str] = []
    yield names
    for name in names:
        if (studio.concepts_dir / name).exists():
            studio.concepts.delete(name)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def files(paths: list[str]) -> list:
    return [handle_file(p) for p in paths]


TRAIN = dict(method="seedselect", steps=2, resolution=64, sample_steps=2, bootstrap=0, seed=1,
             prompt="a yellow square")
SEEDSELECT = dict(prompt="a yellow square", steps=3, semantic_weight=0.5, bootstrap=1,
                  bootstrap_steps=1, sample_steps=2, width=64, height=64, seed=2,
                  guidance_scale=1.0)


def test_named_endpoints_take_keyword_parameters(client) -> None:
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]

    def params(name: str) -> list[str]:
        return [p["parameter_name"] for p in api[name]["parameters"]]

    assert params("/concept_train")[:4] == ["name", "images", "method", "steps"]
    assert {"learning_rate", "rank", "initializer", "semantic_weight", "bootstrap"} <= set(
        params("/concept_train"))
    assert params("/seedselect")[:5] == ["prompt", "images", "steps", "semantic_weight",
                                         "bootstrap"]
    assert params("/concepts") == []
    assert params("/concept_import") == ["file", "name", "model"]


def test_seedselect_returns_image_and_losses(client, pictures, studio) -> None:
    path, info = client.predict(images=files(pictures), **SEEDSELECT, api_name="/seedselect")
    info = json.loads(info)
    assert Image.open(path).size == (64, 64)
    assert info["loss_final"]["total"] < info["loss_initial"]["total"]
    assert info["first_run"]["iterations"] == 3
    assert [r["iterations"] for r in info["bootstrap_runs"]] == [1]
    out = studio.outputs.folder  # info names files relative to the outputs folder
    assert len(info["variants"]) == 1 and (out / info["variants"][0]).is_file()
    assert (out / info["noise_file"]).is_file()


def test_concept_train_adds_a_concept_that_concepts_lists(client, pictures, made) -> None:
    name = unique("api-seeds")
    made.append(name)
    path, info = client.predict(name=name, images=files(pictures), **TRAIN,
                                api_name="/concept_train")
    info = json.loads(info)
    assert info["concept"]["token"] == f"<{name}>"
    assert Image.open(path).size == (64, 64)
    listed = client.predict(api_name="/concepts")
    assert isinstance(listed, list)
    mine = [c for c in listed if c["name"] == name]
    assert len(mine) == 1 and mine[0]["method"] == "seedselect" and len(mine[0]["thumbnails"]) == 3
    with pytest.raises(AppError, match=f"a concept named '{name}' already exists"):
        client.predict(name=name, images=files(pictures), **TRAIN, api_name="/concept_train")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": []}, "0 example images given; upload at least 3"),
        ({"name": "Bad Name!"}, "invalid concept name/token 'Bad Name!'"),
        ({"name": ""}, "the concept needs a name"),
        ({"steps": 99999}, "steps must be between 0 and 5000"),
    ],
)
def test_bad_training_requests_get_clear_errors_and_server_keeps_serving(
    client, pictures, made, change, message
) -> None:
    name = unique("api-ok")
    request = {"name": name, "images": files(pictures), **TRAIN, **change}
    with pytest.raises(AppError, match=message):
        client.predict(**request, api_name="/concept_train")
    assert name not in [c["name"] for c in client.predict(api_name="/concepts")]


def test_non_image_upload_is_named_in_the_error(client, pictures, tmp_path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("words, not pixels")
    with pytest.raises(AppError, match="could not be read as an image"):
        client.predict(name=unique("api-x"), images=files(pictures[:2] + [str(notes)]),
                       **TRAIN, api_name="/concept_train")
    with pytest.raises(AppError, match="2 example images given"):
        client.predict(images=files(pictures[:2]), **SEEDSELECT, api_name="/seedselect")
    path, _ = client.predict(images=files(pictures), **{**SEEDSELECT, "bootstrap": 0,
                                                        "steps": 1}, api_name="/seedselect")
    assert Path(path).is_file()  # still serving after the errors


def test_import_refuses_pickles_and_accepts_safetensors(client, made, tmp_path) -> None:
    evil = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": torch.randn(1, 32)}, "payload": Payload()}, evil)
    with pytest.raises(AppError, match="safetensors"):  # pickles are never opened
        client.predict(file=handle_file(str(evil)), name=unique("evil"),
                       api_name="/concept_import")
    name = unique("api-emb")
    made.append(name)
    good = tmp_path / "good.safetensors"
    save_file({"emb_params": torch.randn(1, 32)}, str(good))
    info = json.loads(client.predict(file=handle_file(str(good)), name=name,
                                     api_name="/concept_import"))
    assert info["token"] == f"<{name}>" and info["method"] == "textual_inversion"
    assert name in [c["name"] for c in client.predict(api_name="/concepts")]
    with pytest.raises(AppError, match="already exists"):
        client.predict(file=handle_file(str(good)), name=name, api_name="/concept_import")
