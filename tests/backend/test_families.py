"""The model-family seam: roles load as the family declares, pipelines are the family's and
draw what diffusers' own pipeline draws, and a task the family cannot do is refused before
anything loads, with the family's reason."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from studio.backend.common import base_pipeline
from studio.backend.models.families import (
    FAMILIES,
    Unsupported,
    capability_matrix,
    get_family,
)
from studio.backend.models.registry import ModelRegistry
from studio.backend.requests import RequestError


def test_every_role_loads_as_its_family_declares(tiny_model_set):
    registry = ModelRegistry(tiny_model_set, offline=True)
    family = registry.family
    assert family.name == tiny_model_set.family == "sd15"
    for role in ("unet", "unet_inpaint", "unet_instruct", "vae", "text_encoder", "tokenizer",
                 "controlnet:depth"):
        declared = family.component(role).cls.rpartition(".")[2]
        assert type(registry.component(role)).__name__ == declared, role
    # the scheduler role is a config the samplers are built from, not a scheduler object
    assert isinstance(registry.component("scheduler"), dict)
    # family-independent roles (preview decoder, image encoders) are not the family's
    assert family.component("taesd") is None and family.component("image_encoder") is None


def test_pipelines_are_the_familys_and_share_its_components(tiny_model_set):
    registry = ModelRegistry(tiny_model_set, offline=True)
    family = registry.family
    base = base_pipeline(registry)
    control = family.pipeline(registry, "control", controlnets=("controlnet:depth",))
    stacked = family.pipeline(registry, "control",
                              controlnets=("controlnet:depth", "controlnet:canny"))
    inpaint = family.pipeline(registry, "inpaint", "unet_inpaint")
    for kind, pipe in (("txt2img", base), ("control", control), ("inpaint", inpaint)):
        assert type(pipe).__name__ == family.pipelines[kind].rpartition(".")[2]
    for pipe in (control, stacked, inpaint):
        assert pipe.text_encoder is base.text_encoder and pipe.vae is base.vae
    assert control.unet is base.unet and inpaint.unet is not base.unet
    assert type(stacked.controlnet).__name__ == "MultiControlNetModel"
    loads = registry.stats["load"]
    assert family.pipeline(registry, "control", controlnets=("controlnet:depth",)) is control
    assert registry.stats["load"] == loads  # built once, then reused


def test_txt2img_draws_what_diffusers_own_pipeline_draws(studio, tiny_model_set):
    """The family assembles the pipeline diffusers would load from the same folder: same
    seed, same sampler, the same pixels."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    req = {"prompt": "a red circle", "seed": 5, "steps": 3, "width": 64, "height": 64}
    ours = np.asarray(studio.txt2img(req).image)
    raw = StableDiffusionPipeline.from_pretrained(
        tiny_model_set.base, safety_checker=None, requires_safety_checker=False,
        dtype=torch.float32, local_files_only=True)
    raw.scheduler = EulerAncestralDiscreteScheduler.from_config(raw.scheduler.config)
    raw.set_progress_bar_config(disable=True)
    theirs = raw(prompt=req["prompt"], num_inference_steps=3, guidance_scale=7.5, width=64,
                 height=64, generator=torch.Generator("cpu").manual_seed(5)).images[0]
    assert np.array_equal(ours, np.asarray(theirs))


@pytest.fixture()
def no_layout_family(monkeypatch):
    """SD1.5 as a family that has no box-layout method (as SDXL will have none)."""
    family = replace(get_family("sd15"), name="no-layout", label="No-layout",
                     tasks={**get_family("sd15").tasks,
                            "layout": Unsupported("no GLIGEN weights exist for it")})
    monkeypatch.setitem(FAMILIES, family.name, family)
    return family


def test_a_task_the_family_cannot_do_is_refused_before_anything_loads(
        no_layout_family, tiny_settings, tiny_model_set, tmp_path):
    from studio.backend.service import Studio

    settings = replace(tiny_settings, outputs_dir=tmp_path / "out",
                       concepts_dir=tmp_path / "concepts")
    studio = Studio(settings, model_set=replace(tiny_model_set, family=no_layout_family.name))
    boxes = [{"phrase": "a cat", "box": [0.1, 0.1, 0.5, 0.5]}]
    with pytest.raises(RequestError, match="layout is not available for No-layout models: "
                                           "no GLIGEN weights exist for it"):
        studio.layout({"prompt": "a cat", "boxes": boxes, "steps": 2, "width": 64,
                       "height": 64})
    assert studio.registry.stats["load"] == 0  # refused before any model loaded
    # the next request, of a task the family can do, works
    assert studio.txt2img({"prompt": "a cat", "steps": 1, "width": 64, "height": 64}).image
    assert "no: no GLIGEN weights exist for it" in capability_matrix()


def test_an_unknown_family_is_named_with_the_known_ones(tiny_model_set):
    with pytest.raises(ValueError, match="unknown model family 'sd9'; known: sd15"):
        ModelRegistry(replace(tiny_model_set, family="sd9"))


def test_a_concept_applies_only_to_the_family_it_was_made_for(
        no_layout_family, tiny_settings, tiny_model_set, tmp_path):
    """A library kept across a restart with other models: its concepts say which family they
    fit, and a prompt naming one on another family is refused by name, not mis-applied."""
    import torch
    from safetensors.torch import save_file

    from studio.backend.service import Studio

    settings = replace(tiny_settings, outputs_dir=tmp_path / "out",
                       concepts_dir=tmp_path / "concepts")
    sd15 = Studio(settings, model_set=tiny_model_set)
    save_file({"emb_params": torch.randn(1, 32)}, str(tmp_path / "cat.safetensors"))
    assert sd15.import_concept(tmp_path / "cat.safetensors", "mycat")["family"] == "sd15"
    small = {"prompt": "a photo of <mycat>", "steps": 1, "width": 64, "height": 64}
    assert sd15.txt2img(small).image

    other = Studio(settings, model_set=replace(tiny_model_set, family=no_layout_family.name))
    with pytest.raises(RequestError, match="concept <mycat> was made for sd15 models and "
                                           "these are No-layout"):
        other.txt2img(small)
    assert other.txt2img({**small, "prompt": "a photo of a cat"}).image  # the next one works


# ---------------------------------------------------------------------------- recognising
def test_a_folder_or_single_file_says_its_family(tiny_model_set, tiny_xl_model_set, tmp_path):
    from studio.backend.models.families import detect_family
    from tests.support.convert import save_single_file

    assert detect_family(tiny_model_set.base) == "sd15"
    assert detect_family(tiny_xl_model_set.base) == "sdxl"
    checkpoint = save_single_file(tiny_model_set.base, tmp_path / "sd15.safetensors")
    assert detect_family(str(checkpoint)) == "sd15"


def test_a_local_path_as_models_takes_its_familys_set(tiny_settings, tiny_xl_model_set):
    from studio.backend.models.builtin import resolve_model_set

    model_set = resolve_model_set(replace(tiny_settings, models=tiny_xl_model_set.base))
    assert model_set.family == "sdxl" and model_set.base == tiny_xl_model_set.base


def test_unknown_or_pickled_checkpoints_are_refused_unopened(tmp_path):
    import os

    import torch
    from safetensors.torch import save_file

    from studio.backend.models.families import detect_family

    pickled = tmp_path / "model.ckpt"
    os.mkfifo(pickled)  # opening it would block: the refusal must come from the name alone
    with pytest.raises(ValueError, match="Pickled checkpoints"):
        detect_family(str(pickled))
    save_file({"foo.weight": torch.zeros(2)}, str(tmp_path / "odd.safetensors"))
    with pytest.raises(ValueError, match="not a checkpoint layout the studio knows"):
        detect_family(str(tmp_path / "odd.safetensors"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="no model_index.json"):
        detect_family(str(tmp_path / "folder"))
    (tmp_path / "folder" / "model_index.json").write_text('{"_class_name": "WanPipeline"}')
    with pytest.raises(ValueError, match="WanPipeline pipeline, which no model family"):
        detect_family(str(tmp_path / "folder"))


def test_a_base_model_of_another_family_is_refused_by_name(tiny_settings, tiny_xl_model_set):
    from studio.backend.models.builtin import resolve_model_set

    with pytest.raises(ValueError, match="is a sdxl model but the sd15 set is sd15: start "
                                         "with --models sdxl"):
        resolve_model_set(replace(tiny_settings, models="sd15",
                                  base_model=tiny_xl_model_set.base))
