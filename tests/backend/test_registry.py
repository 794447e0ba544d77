"""ModelRegistry: sharing, lazy loading, zero reloads, memory budget, missing-weights errors."""

from __future__ import annotations

import pytest

from studio.backend.common import base_pipeline
from studio.backend.models.registry import ModelRegistry, ModelUnavailableError, module_bytes


def _stable_diffusion_like(registry: ModelRegistry, unet_role: str):
    """A text-to-image pipeline of the family on another UNet role."""
    return base_pipeline(registry, unet_role)


def test_nothing_loads_until_first_use(tiny_model_set):
    registry = ModelRegistry(tiny_model_set, offline=True)
    assert registry.loaded_keys() == []
    assert registry.stats["load"] == 0


def test_pipelines_share_text_encoder_tokenizer_and_vae(tiny_model_set):
    registry = ModelRegistry(tiny_model_set, offline=True)
    base = base_pipeline(registry)
    inpaint_like = _stable_diffusion_like(registry, "unet_inpaint")
    instruct_like = _stable_diffusion_like(registry, "unet_instruct")
    for pipe in (inpaint_like, instruct_like):
        assert pipe.text_encoder is base.text_encoder
        assert pipe.tokenizer is base.tokenizer
        assert pipe.vae is base.vae
    assert inpaint_like.unet is not base.unet
    assert inpaint_like.unet.config.in_channels == 9
    assert instruct_like.unet.config.in_channels == 8
    # each component was loaded exactly once
    for key in registry.loaded_keys():
        assert registry.stats[f"load:{key}"] == 1


def test_second_use_performs_zero_loads(fresh_studio):
    req = {"prompt": "a red circle", "seed": 5, "steps": 2, "width": 64, "height": 64}
    fresh_studio.txt2img(req)
    loads = fresh_studio.registry.stats["load"]
    builds = fresh_studio.registry.stats["pipeline_build"]
    assert loads > 0
    fresh_studio.txt2img(req)
    assert fresh_studio.registry.stats["load"] == loads
    assert fresh_studio.registry.stats["pipeline_build"] == builds


def test_budget_evicts_least_recently_used_and_counts_it(tiny_model_set):
    probe = ModelRegistry(tiny_model_set, offline=True)
    shared = sum(module_bytes(probe.component(r)) for r in ("vae", "text_encoder"))
    unet = module_bytes(probe.component("unet"))
    # room for the shared parts and one UNet, not two
    registry = ModelRegistry(tiny_model_set, offline=True, budget_bytes=shared + unet + unet // 2)
    _stable_diffusion_like(registry, "unet")
    assert registry.stats["drop"] == 0
    _stable_diffusion_like(registry, "unet_inpaint")
    # the base UNet was least recently used and not needed: it went, the shared ones stayed
    assert registry.stats["drop"] == 1
    assert registry.stats[f"drop:{registry.key('unet')}"] == 1
    assert registry.key("unet") not in registry.loaded_keys()
    assert registry.key("text_encoder") in registry.loaded_keys()
    assert registry.resident_bytes() <= registry.budget_bytes
    assert any(e.startswith("drop unet@") for e in registry.events)
    # using the base tab again reloads it (counted) and evicts the inpaint UNet instead
    _stable_diffusion_like(registry, "unet")
    assert registry.stats[f"load:{registry.key('unet')}"] == 2
    assert registry.stats[f"drop:{registry.key('unet_inpaint')}"] == 1


def test_accelerator_budget_offloads_to_cpu_then_onloads(tiny_model_set):
    """On a GPU the LRU component moves to CPU (kept, not dropped) and comes back on use.

    No GPU here: the offload policy (the default on accelerators) is forced on the CPU, which
    runs the same bookkeeping; the move itself is then a no-op.
    """
    probe = ModelRegistry(tiny_model_set, offline=True)
    assert probe.evict_policy == "drop"
    unet = module_bytes(probe.component("unet"))
    registry = ModelRegistry(tiny_model_set, offline=True, evict_policy="offload",
                             budget_bytes=unet + unet // 2)
    registry.component("unet")
    registry.component("unet_inpaint")
    assert registry.stats["offload"] == 1 and registry.stats["drop"] == 0
    assert registry.key("unet") in registry.loaded_keys()  # still held, on the CPU
    assert registry.resident_bytes() <= registry.budget_bytes
    registry.prepare(["unet"])
    assert registry.stats[f"onload:{registry.key('unet')}"] == 1
    assert registry.stats[f"offload:{registry.key('unet_inpaint')}"] == 1
    assert registry.stats["load"] == 2  # no reload from disk


def test_missing_weights_offline_names_model_and_fix(tiny_model_set):
    missing = tiny_model_set.with_repos(base="some-org/not-a-cached-model")
    registry = ModelRegistry(missing, offline=True)
    with pytest.raises(ModelUnavailableError) as info:
        registry.component("unet")
    msg = str(info.value)
    assert "some-org/not-a-cached-model" in msg
    assert "huggingface-cli download some-org/not-a-cached-model" in msg
    assert "--models tiny" in msg


def test_missing_local_folder_is_reported(tiny_model_set, tmp_path):
    missing = tiny_model_set.with_repos(inpaint=str(tmp_path / "nope"))
    registry = ModelRegistry(missing, offline=True)
    with pytest.raises(ModelUnavailableError, match="nope"):
        registry.component("unet_inpaint")


def test_tiny_set_has_every_architecture(tiny_model_set):
    registry = ModelRegistry(tiny_model_set, offline=True)
    assert registry.component("unet").config.in_channels == 4
    assert registry.component("unet_inpaint").config.in_channels == 9
    assert registry.component("unet_instruct").config.in_channels == 8
    gligen = registry.component("unet_gligen")
    assert gligen.config.attention_type == "gated"
    assert hasattr(gligen, "position_net")
    for ctype in ("scribble", "openpose", "depth", "canny"):
        assert registry.component(f"controlnet:{ctype}").config.cross_attention_dim == 32
    assert registry.component("tokenizer").model_max_length == 77
    assert registry.component("image_encoder").config.projection_dim == 32
