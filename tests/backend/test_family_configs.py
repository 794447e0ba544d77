"""The configs each family ships for single-file checkpoints (`Family.configs`): with them a
checkpoint downloaded from a model site loads with no Hub and no Hugging Face cache.

The configs are held to the real models by their parameter counts (built on the meta device,
no memory), the tokenizers by the ids the real CLIP tokenizer gives, and the loading path by
a single file that loads offline, with an empty Hub cache, from a family whose shipped configs
are the tiny set's (the real ones describe 10 GB models)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from studio.backend.models.families import get_family
from studio.backend.models.families.base import load_class
from studio.backend.models.registry import ModelRegistry
from studio.backend.requests import Txt2ImgRequest
from studio.backend.tasks.txt2img import run_txt2img
from tests.support.convert import save_single_file

# the real models' sizes (parameters): SD1.5's UNet, SDXL's, SD's VAE, CLIP ViT-L/14's text
# tower and OpenCLIP ViT-bigG/14's with its projection
REAL = {("sd15", "unet"): 859_520_964, ("sdxl", "unet"): 2_567_463_684,
        ("sd15", "vae"): 83_653_863, ("sdxl", "vae"): 83_653_863,
        ("sd15", "text_encoder"): 123_060_480, ("sdxl", "text_encoder"): 123_060_480,
        ("sdxl", "text_encoder_2"): 694_659_840}


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_the_shipped_configs_build_the_real_models(family, tmp_path):
    from accelerate import init_empty_weights

    fam = get_family(family)
    folder = fam.write_configs(tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == fam.single_file.rpartition(".")[2]
    for (name, role), count in REAL.items():
        if name != family:
            continue
        cls = load_class(fam.components[role].cls)
        with init_empty_weights():
            if role.startswith("text_encoder"):
                from transformers import CLIPTextConfig

                model = cls(CLIPTextConfig.from_pretrained(folder, subfolder=role))
            else:
                model = cls.from_config(cls.load_config(folder, subfolder=role))
        assert sum(p.numel() for p in model.parameters()) == count, role


def test_the_shipped_tokenizers_are_clips(tmp_path):
    from transformers import CLIPTokenizer

    folder = get_family("sdxl").write_configs(tmp_path)
    first = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    second = CLIPTokenizer.from_pretrained(folder / "tokenizer_2")
    assert len(first) == len(second) == 49408
    # what openai/clip-vit-large-patch14's tokenizer gives
    assert first("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    padded = dict(padding="max_length", max_length=6)
    assert first("a cat", **padded).input_ids == [49406, 320, 2368, 49407, 49407, 49407]
    # SDXL's second tokenizer pads with "!" (OpenCLIP's), id 0
    assert second("a cat", **padded).input_ids == [49406, 320, 2368, 49407, 0, 0]


def test_a_written_folder_is_reused_and_rewritten_when_the_configs_change(tmp_path):
    fam = get_family("sd15")
    folder = fam.write_configs(tmp_path)
    (folder / "unet" / "config.json").write_text("{}")  # reused as written: not rewritten
    assert fam.write_configs(tmp_path) == folder
    assert (folder / "unet" / "config.json").read_text() == "{}"
    changed = replace(fam, configs={**fam.configs, "extra.json": {"a": 1}})
    changed.write_configs(tmp_path)
    assert json.loads((folder / "unet" / "config.json").read_text())["cross_attention_dim"] == 768


def test_a_single_file_loads_offline_from_the_shipped_configs(
        tiny_model_set, tmp_path, monkeypatch):
    """No set folder, no Hub, an empty Hub cache: the registry writes the family's configs
    and `from_single_file` reads them (here the tiny set's, to fit its tiny weights)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = Path(tiny_model_set.base)
    checkpoint = save_single_file(str(base), tmp_path / "tiny.safetensors")
    tiny_configs = {str(p.relative_to(base)): json.loads(p.read_text())
                    for p in base.rglob("*.json")
                    if p.parts[-2] != "tokenizer" and p.name != "model_index.json"}
    index = json.loads((base / "model_index.json").read_text())
    sd15 = get_family("sd15")
    family = replace(sd15, configs={**tiny_configs, "model_index.json": {
        **sd15.configs["model_index.json"], "scheduler": index["scheduler"]}}, tokenizers={})
    configs = tmp_path / "configs"
    shutil.copytree(base / "tokenizer", family.write_configs(configs) / "tokenizer")

    ms = tiny_model_set.with_base(str(checkpoint))
    registry = ModelRegistry(ms, offline=True, cache_dir=tmp_path / "empty-hub",
                             configs_dir=configs)
    registry.family = family
    assert registry._single_file_config() == str(configs / "sd15")
    req = Txt2ImgRequest(prompt="a red circle", seed=7, steps=2, width=64, height=64)
    req.validate()
    ours = run_txt2img(registry, req)[0]
    ref = run_txt2img(ModelRegistry(tiny_model_set, offline=True), req)[0]
    assert np.array_equal(np.asarray(ours), np.asarray(ref))
