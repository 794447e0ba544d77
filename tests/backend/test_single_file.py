"""Single-file (A1111 / LDM layout) checkpoints: export, load as the base model, same pixels."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from studio.backend.models.registry import ModelRegistry, ModelUnavailableError
from studio.backend.requests import Txt2ImgRequest
from studio.backend.tasks.txt2img import run_txt2img
from tests.support.convert import diffusers_to_ldm_state_dict, save_single_file

LDM_PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.")
ROLES = ("unet", "vae", "text_encoder")


@pytest.fixture(scope="module")
def checkpoint(tiny_model_set, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_single_file(tiny_model_set.base, target)


@pytest.fixture(scope="module")
def folder_registry(tiny_model_set) -> ModelRegistry:
    return ModelRegistry(tiny_model_set, offline=True)


@pytest.fixture(scope="module")
def file_registry(tiny_model_set, checkpoint) -> ModelRegistry:
    model_set = replace(tiny_model_set.with_base(str(checkpoint)),
                        extra={"single_file_config": tiny_model_set.base})
    return ModelRegistry(model_set, offline=True)


def _request() -> Txt2ImgRequest:
    req = Txt2ImgRequest(prompt="a red circle", seed=7, steps=2, width=64, height=64)
    req.validate()
    return req


def test_export_uses_the_ldm_layout(checkpoint):
    state = load_file(checkpoint)
    assert all(k.startswith(LDM_PREFIXES) for k in state)
    # tiny UNet: 2 blocks x 2 layers; down block 0 has a downsampler, up block 0 attention + up
    assert "model.diffusion_model.input_blocks.3.0.op.weight" in state
    assert "model.diffusion_model.input_blocks.4.1.proj_in.weight" in state
    assert "model.diffusion_model.input_blocks.1.0.in_layers.2.weight" in state
    assert "model.diffusion_model.output_blocks.2.2.conv.weight" in state
    assert "model.diffusion_model.middle_block.2.emb_layers.1.weight" in state
    assert "model.diffusion_model.out.2.weight" in state
    # tiny VAE: 4 levels; decoder levels numbered from the lowest resolution up
    assert "first_stage_model.decoder.up.3.upsample.conv.weight" in state
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in state
    assert "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight" in state
    assert state["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4
    assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in state


def test_single_file_loads_the_same_weights(folder_registry, file_registry):
    for role in ROLES:
        ours = file_registry.component(role).state_dict()
        ref = folder_registry.component(role).state_dict()
        assert ours.keys() == ref.keys(), role
        for key, tensor in ref.items():
            assert torch.equal(ours[key], tensor), f"{role}: {key}"
    assert file_registry.key("unet").endswith(".safetensors")


def test_single_file_generates_identical_pixels(folder_registry, file_registry):
    from_folder, _ = run_txt2img(folder_registry, _request())
    from_file, _ = run_txt2img(file_registry, _request())
    a, b = np.asarray(from_folder), np.asarray(from_file)
    assert a.shape == (64, 64, 3)
    assert np.array_equal(a, b)


def test_pickled_checkpoint_is_refused(tiny_model_set, tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not loaded")
    registry = ModelRegistry(tiny_model_set.with_repos(base=str(ckpt)), offline=True)
    with pytest.raises(ModelUnavailableError, match="Pickled checkpoints .* can run"):
        registry.component("unet")


def test_missing_file_is_a_clear_error(tiny_model_set, tmp_path):
    missing = tmp_path / "nowhere.safetensors"
    registry = ModelRegistry(tiny_model_set.with_repos(base=str(missing)), offline=True)
    with pytest.raises(ModelUnavailableError, match="nowhere.safetensors' does not exist"):
        registry.component("vae")


def test_half_precision_export_and_bad_targets(tiny_model_set, checkpoint, tmp_path):
    half = load_file(save_single_file(tiny_model_set.base, tmp_path / "half.safetensors",
                                      dtype=torch.float16))
    full = load_file(checkpoint)
    assert half.keys() == full.keys()
    assert {t.dtype for t in half.values()} == {torch.float16}
    with pytest.raises(ValueError, match="must end in .safetensors"):
        save_single_file(tiny_model_set.base, tmp_path / "model.ckpt")
    with pytest.raises(ValueError, match="not a diffusers model folder"):
        save_single_file(tmp_path, tmp_path / "x.safetensors")


def test_unet_with_lora_adapters_is_refused(folder_registry):
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    unet = UNet2DConditionModel.from_config(folder_registry.component("unet").config)
    unet.add_adapter(LoraConfig(r=2, target_modules=["to_q"]))
    with pytest.raises(ValueError, match="LoRA adapters"):
        diffusers_to_ldm_state_dict(unet, folder_registry.component("vae"),
                                    folder_registry.component("text_encoder"))


def test_full_size_sd15_layout_matches_what_diffusers_detects():
    """The same code lays out a full SD1.5-shaped model (on the meta device: no memory)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=64)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                            down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4)
        text_encoder = CLIPTextModel(CLIPTextConfig())
    state = diffusers_to_ldm_state_dict(unet, vae, text_encoder)
    assert infer_diffusers_model_type(state) == "v1"
    # tensor counts of the original SD1.5 checkpoint (EMA and position_ids aside)
    counts = [sum(k.startswith(p) for k in state) for p in LDM_PREFIXES]
    assert counts == [686, 248, 196]
    for key in ("input_blocks.9.0.op.weight", "output_blocks.2.1.conv.weight",
                "output_blocks.5.2.conv.weight", "output_blocks.11.0.skip_connection.weight"):
        assert "model.diffusion_model." + key in state
    assert state["first_stage_model.decoder.up.3.upsample.conv.weight"].shape[0] == 512
