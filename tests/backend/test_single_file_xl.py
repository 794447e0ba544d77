"""Single-file SDXL checkpoints in the original (SGM) layout, as model sites share them: the
test writes one from the tiny SDXL set (both text encoders, OpenCLIP's `clip_g` names and
fused attention included), the studio recognises its family from the keys, and it loads
offline, from the set's own configs or from the Hub cache under SDXL's real repo id, to the
same weights and the same pixels as the folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from studio.backend.models.families import detect_family
from studio.backend.models.families.sdxl import MODEL_SET as SDXL
from studio.backend.models.registry import ModelRegistry
from studio.backend.requests import Txt2ImgRequest
from studio.backend.tasks.txt2img import run_txt2img
from tests.support.convert import save_single_file_xl
from tests.support.hubcache import hub_cache_of

ROLES = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def checkpoint(tiny_xl_model_set, tmp_path_factory) -> Path:
    return save_single_file_xl(tiny_xl_model_set.base,
                               tmp_path_factory.mktemp("xl-ckpt") / "tiny-xl.safetensors")


@pytest.fixture(scope="module")
def folder(tiny_xl_model_set) -> ModelRegistry:
    return ModelRegistry(tiny_xl_model_set, offline=True)


def _request() -> Txt2ImgRequest:
    req = Txt2ImgRequest(prompt="a red circle", seed=3, steps=2, width=64, height=64)
    req.validate()
    return req


def _same(a: ModelRegistry, b: ModelRegistry) -> None:
    for role in ROLES:
        ours, ref = a.component(role).state_dict(), b.component(role).state_dict()
        assert ours.keys() == ref.keys(), role
        for key, tensor in ref.items():
            assert torch.equal(ours[key], tensor), f"{role}: {key}"
    assert np.array_equal(np.asarray(run_txt2img(a, _request())[0]),
                          np.asarray(run_txt2img(b, _request())[0]))


def test_the_file_is_in_the_original_layout_and_says_sdxl(checkpoint):
    with safe_open(str(checkpoint), "pt") as fh:
        keys = set(fh.keys())
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert "conditioner.embedders.1.model.text_projection" in keys
    assert ("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"
            in keys)
    assert "model.diffusion_model.label_emb.0.0.weight" in keys
    assert detect_family(str(checkpoint)) == "sdxl"


def test_it_loads_offline_from_the_sets_configs(tiny_xl_model_set, checkpoint, folder):
    ms = replace(tiny_xl_model_set.with_base(str(checkpoint)),
                 extra={"single_file_config": tiny_xl_model_set.base})
    _same(ModelRegistry(ms, offline=True), folder)


def test_it_loads_offline_from_the_hub_cache_of_sdxl(tiny_xl_model_set, checkpoint, folder,
                                                     tmp_path):
    hub = hub_cache_of(tiny_xl_model_set, tmp_path / "hub", ("base",), real=SDXL)
    ms = replace(SDXL.with_base(str(checkpoint)), repos={
        **SDXL.with_base(str(checkpoint)).repos, "taesd": tiny_xl_model_set.get("taesd")})
    _same(ModelRegistry(ms, offline=True, cache_dir=hub), folder)
