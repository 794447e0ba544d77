"""The real path: SD1.5 repo ids resolved from a Hugging Face cache, offline.

The cache holds the tiny models under the real ids (tests/support/hubcache.py), and the
studio loads `--models sd15` from it with HF_HUB_OFFLINE=1, as a user with downloaded weights
and no network does.
"""

from __future__ import annotations

import numpy as np
import pytest

from studio.backend.models.families.sd15 import MODEL_SET as SD15
from studio.backend.models.registry import LORA_WEIGHT_NAME, ModelRegistry
from tests.support.hubcache import hub_cache_of

GEN = {"prompt": "a red circle", "seed": 2, "steps": 4, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def hub(tiny_model_set, tmp_path_factory):
    return hub_cache_of(tiny_model_set, tmp_path_factory.mktemp("hub"),
                        ("base", "lcm_lora", "ip_adapter", "ip_text"))


@pytest.fixture()
def sd15_studio(hub, tiny_settings, tmp_path, monkeypatch):
    from studio.backend.service import Studio

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    registry = ModelRegistry(SD15, offline=True, cache_dir=hub)
    settings = type(tiny_settings)(models="sd15", offline=True, cache_dir=tiny_settings.cache_dir,
                                   outputs_dir=tmp_path / "out")
    return Studio(settings, model_set=SD15, registry=registry)


def test_base_model_loads_from_the_hub_cache_by_repo_id(sd15_studio):
    result = sd15_studio.txt2img(GEN)
    assert result.image.size == (64, 64)
    assert sd15_studio.registry.key("unet") == f"unet@{SD15.base}"


def test_fast_mode_loads_the_lcm_lora_by_repo_id_offline(sd15_studio, hub):
    """The LCM-LoRA repo must be loaded with its file named: offline, diffusers cannot look
    the file up ("When using the offline mode, you must specify a `weight_name`")."""
    assert (next(hub.glob("models--latent-consistency--*/snapshots/*")) / LORA_WEIGHT_NAME
            ).is_file()
    plain = np.asarray(sd15_studio.txt2img(GEN).image)
    fast = sd15_studio.txt2img({**GEN, "fast": True})
    assert fast.info["steps_run"] == 4 and fast.info["guidance_run"] == 1.0
    assert sd15_studio.registry.stats[f"load:lora:lcm@{SD15.get('lcm_lora')}"] == 1
    assert np.abs(np.asarray(fast.image, np.int16) - plain).mean() > 1


def test_remix_loads_ip_adapter_encoder_and_text_tower_by_repo_id_offline(sd15_studio):
    """h94/IP-Adapter's file and image encoder sit in `models/`; laion's repo is a whole
    CLIPModel whose text half is the text tower: both resolved from the cache, offline."""
    from PIL import Image

    picture = Image.new("RGB", (80, 80), (200, 40, 40))
    out = sd15_studio.run("remix", {**GEN, "images": [picture], "text_from": "a red circle",
                                    "text_to": "a blue circle", "text_amount": 0.5})
    assert out.image.size == (64, 64) and out.info["text_diff_cosine"] < 1
    registry = sd15_studio.registry
    assert registry.key("ip_adapter") == "ip_adapter@h94/IP-Adapter"
    assert registry.key("ip_image_encoder") == "ip_image_encoder@h94/IP-Adapter"
    assert registry.key("ip_text_encoder") == f"ip_text_encoder@{SD15.get('ip_text')}"
    # CLIP's own 224 px preprocessing (h94's encoder folder has no preprocessor config)
    assert registry.component("ip_image_encoder").image_processor.crop_size["height"] == 224
    assert registry.component("ip_text_encoder").config.projection_dim == \
        registry.component("ip_adapter").embed_dim
