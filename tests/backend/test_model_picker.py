"""The model catalog behind the picker: what it lists (built-in sets, the Hub cache,
--models-dir files; never a path), a request choosing a checkpoint for its job only, switching
back within the memory budget reloading nothing, the checkpoint's name and hash in the saved
PNG, Regenerate on the same checkpoint, and bad names refused with the list."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.backend.models.catalog import Catalog
from studio.backend.requests import RequestError
from studio.backend.service import Studio
from tests.support.convert import save_single_file, save_single_file_xl
from tests.support.hubcache import hub_cache_of

SMALL = {"prompt": "a red circle", "seed": 5, "steps": 2, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def models_dir(tiny_model_set, tiny_xl_model_set, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoints")
    save_single_file(tiny_model_set.base, folder / "mine.safetensors")
    save_single_file_xl(tiny_xl_model_set.base, folder / "xl-finetune.safetensors")
    (folder / "sub").mkdir()
    save_single_file(tiny_model_set.base, folder / "sub" / "other.safetensors")
    (folder / "old.ckpt").write_bytes(b"pickled: never opened")
    (folder / "junk.safetensors").write_bytes(b"not a checkpoint")
    (folder / "notes.txt").write_text("not a model")
    return folder


@pytest.fixture(scope="module")
def picker(tiny_settings, tiny_model_set, models_dir, tmp_path_factory) -> Studio:
    tmp = tmp_path_factory.mktemp("picker")
    settings = replace(tiny_settings, outputs_dir=tmp / "out", concepts_dir=tmp / "c",
                       models_dir=models_dir)
    return Studio(settings, model_set=tiny_model_set)


def test_the_list_names_every_kind_and_no_path(picker, models_dir):
    listed = picker.models()
    assert listed[0] == {"name": "tiny", "family": "sd15", "source": "builtin"}
    by_name = {m["name"]: m for m in listed}
    assert by_name["tiny-xl"] == {"name": "tiny-xl", "family": "sdxl", "source": "builtin"}
    assert by_name["mine.safetensors"]["source"] == "file"
    assert by_name["sub/other.safetensors"]["family"] == "sd15"
    assert by_name["xl-finetune.safetensors"]["family"] == "sdxl"
    assert by_name["stabilityai/stable-diffusion-xl-base-1.0"]["source"] == "hub"
    assert not {"old.ckpt", "junk.safetensors", "notes.txt"} & set(by_name)
    assert all(set(m) == {"name", "family", "source"} for m in listed)
    assert str(models_dir) not in repr(listed)


def test_a_request_chooses_its_checkpoint_for_its_job_only(picker):
    xl = picker.txt2img({**SMALL, "model": "tiny-xl"})
    assert xl.info["model"] == "tiny-xl" and xl.info["request"]["model"] == "tiny-xl"
    assert picker.registry.family.name == "sd15" and picker.model_name == "tiny"
    plain = picker.txt2img(SMALL)
    assert plain.info["model"] == "tiny" and plain.info["request"]["model"] == "tiny"
    assert not np.array_equal(np.asarray(xl.image), np.asarray(plain.image))


def test_switching_back_within_the_budget_reloads_nothing(picker):
    picker.txt2img({**SMALL, "model": "tiny-xl"})
    picker.txt2img(SMALL)
    loads = picker.registry.stats["load"]
    picker.txt2img({**SMALL, "model": "tiny-xl"})
    picker.txt2img(SMALL)
    assert picker.registry.stats["load"] == loads


def test_a_single_file_from_the_models_dir_draws_as_its_folder(picker):
    from_file = picker.txt2img({**SMALL, "model": "mine.safetensors"})
    from_folder = picker.txt2img(SMALL)
    assert from_file.info["model"] == "mine.safetensors"
    assert np.array_equal(np.asarray(from_file.image), np.asarray(from_folder.image))


def test_an_sdxl_single_file_draws_as_the_sdxl_folder(picker):
    from_file = picker.txt2img({**SMALL, "model": "xl-finetune.safetensors"})
    from_folder = picker.txt2img({**SMALL, "model": "tiny-xl"})
    assert np.array_equal(np.asarray(from_file.image), np.asarray(from_folder.image))
    assert picker.registry.family.name == "sd15"  # back to the default after the job


def test_the_png_names_the_checkpoint_and_regenerate_uses_it(picker):
    result = picker.txt2img({**SMALL, "model": "tiny-xl"})
    text = Image.open(result.path).text["parameters"]
    digest = picker.catalog.short_hash("tiny-xl")
    assert len(digest) == 10 and f"Model hash: {digest}, Model: tiny-xl" in text
    again = picker.regenerate(str(result.path))
    assert again.info["model"] == "tiny-xl"
    assert np.array_equal(np.asarray(again.image), np.asarray(result.image))
    file_hash = picker.catalog.short_hash("mine.safetensors")
    assert file_hash == picker.catalog.short_hash("mine.safetensors")  # remembered


@pytest.mark.parametrize(("model", "fragment"), [
    ("nope", "unknown model 'nope'; this server has: tiny, "),
    ("/etc/passwd", "looks like a path"),
    ("../mine.safetensors", "looks like a path"),
    ("C:\\models\\x.safetensors", "looks like a path"),
    ("old.ckpt", "unknown model 'old.ckpt'"),
    ("x" * 400, "must be the name of one of the server's models"),
    (7, "model must be a model's name"),
])
def test_bad_model_names_are_refused_with_the_list(picker, model, fragment):
    with pytest.raises(RequestError, match=None) as err:
        picker.txt2img({**SMALL, "model": model})
    assert fragment in str(err.value)


def test_a_task_the_chosen_family_cannot_do_is_refused_before_loading(picker):
    loads = picker.registry.stats["load"]
    with pytest.raises(RequestError, match="layout is not available for SDXL"):
        picker.layout({**SMALL, "model": "tiny-xl", "boxes": [
            {"phrase": "a red circle", "box": [0.1, 0.1, 0.5, 0.5]}]})
    assert picker.registry.stats["load"] == loads
    assert picker.family_notes("layout", "sdxl") and not picker.family_notes("layout", "sd15")


def test_hub_cache_pipelines_are_listed_by_repo_id(tiny_model_set, tmp_path):
    hub = hub_cache_of(tiny_model_set, tmp_path / "hub", ("base", "inpaint"))
    catalog = Catalog(tiny_model_set, hub_cache=hub)
    listed = {m["name"]: m for m in catalog.listing()}
    base = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert listed[base] == {"name": base, "family": "sd15", "source": "hub"}
    # an inpainting pipeline is no checkpoint to pick (it completes a family's set)
    assert not any("inpainting" in name for name in listed)
    assert catalog.short_hash(base) is not None
