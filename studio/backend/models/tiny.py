"""The `tiny` model set: random miniature versions of every architecture the studio loads.

They are built from configs in a few seconds with a fixed seed, written to disk in the Hub
layout (one folder per repo, `unet/`, `vae/`, ... subfolders, safetensors weights) and then
loaded through exactly the same `from_pretrained` code as real weights. They draw noise; their
job is to prove the wiring (shapes, sharing, loading, validation) fast and offline.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from .modelsets import CONTROL_TYPES, REPOS
from .tokenizer_vocab import write_tokenizer

log = logging.getLogger(__name__)

TINY_VERSION = "v6"  # bump when the configs below change, so caches are rebuilt
CROSS_DIM = 32

def unet_kwargs(**extra: object) -> dict:
    """The tiny UNet's config (`extra` overrides or adds keys: other channels, SDXL's)."""
    kw = dict(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    kw.update(extra)
    return kw


def _scheduler_config() -> dict:
    # Same noise schedule as SD1.5 (scaled_linear 0.00085 -> 0.012), so schedulers behave alike.
    return {
        "_class_name": "PNDMScheduler",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "prediction_type": "epsilon",
        "clip_sample": False,
        "timestep_spacing": "leading",
    }


def save_pipeline_index(folder: Path, cls: str, components: dict[str, tuple[str, str]]) -> None:
    index = {"_class_name": cls, "_diffusers_version": "0.42.1"}
    index.update({k: list(v) for k, v in components.items()})
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


Builder = Callable[[Path, int], None]


def build_tiny_set(root: Path, seed: int = 0, builders: tuple[Builder, ...] | None = None,
                   version: str = TINY_VERSION) -> Path:
    """Build every tiny model under `root` (atomic: a half-built set is never visible)."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=root.parent))
    log.info("building tiny model set in %s", root)
    try:
        for build in builders or BUILDERS:
            build(tmp, seed)
        (tmp / "TINY_VERSION").write_text(version)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def tiny_vae() -> torch.nn.Module:
    """A tiny 4-channel VAE, 8x smaller latents (the SD and SDXL families' layout)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=64,
    )


def write_base_parts(base: Path, seed: int, unet_config: dict, scheduler_config: dict
                     ) -> None:
    """A base repo's family-independent parts: a random UNet of `unet_config`, the tiny VAE
    and the scheduler config (its text encoders and model_index are the family's)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    UNet2DConditionModel(**unet_config).save_pretrained(base / "unet")
    torch.manual_seed(seed)
    tiny_vae().save_pretrained(base / "vae")
    (base / "scheduler").mkdir(parents=True)
    (base / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_config))


def _build_base(root: Path, seed: int) -> None:
    """The base repo: UNet, VAE, CLIP text encoder + offline tokenizer, scheduler config."""
    from transformers import CLIPTextConfig, CLIPTextModel

    base = root / REPOS["base"]
    write_base_parts(base, seed, unet_kwargs(), _scheduler_config())
    vocab_size = write_tokenizer(base / "tokenizer")
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
            hidden_size=CROSS_DIM,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=vocab_size,
            max_position_embeddings=77,
            projection_dim=CROSS_DIM,
        )
    )
    text_encoder.save_pretrained(base / "text_encoder")
    save_pipeline_index(base, "StableDiffusionPipeline", {
        "unet": ("diffusers", "UNet2DConditionModel"),
        "vae": ("diffusers", "AutoencoderKL"),
        "text_encoder": ("transformers", "CLIPTextModel"),
        "tokenizer": ("transformers", "CLIPTokenizer"),
        "scheduler": ("diffusers", "PNDMScheduler"),
        "safety_checker": (None, None),
        "feature_extractor": (None, None),
    })


def _build_task_unets(root: Path, seed: int) -> None:
    """Task UNets: the base architecture with extra input channels (inpaint 9, instruct 8) or
    GLIGEN's gated self-attention + position net. Each is its own repo with a unet/."""
    from diffusers import UNet2DConditionModel

    for key, extra in (
        ("inpaint", {"in_channels": 9}),
        ("instruct", {"in_channels": 8}),
        ("gligen", {"attention_type": "gated"}),
        # GLIGEN inpainting: noisy latent (4) + masked image latent (4) + box mask (1)
        ("gligen_inpaint", {"attention_type": "gated", "in_channels": 9}),
    ):
        torch.manual_seed(seed + 1)
        unet = UNet2DConditionModel(**unet_kwargs(**extra))
        if "attention_type" in extra:
            _open_gligen_gates(unet)
        unet.save_pretrained(root / REPOS[key] / "unet")


def _build_controlnets(root: Path, seed: int) -> None:
    """One ControlNet per control type, each seeded differently so they differ, with
    non-zero "zero convolutions" so a control image visibly changes the output."""
    from diffusers import ControlNetModel

    for i, ctype in enumerate(CONTROL_TYPES):
        torch.manual_seed(seed + 10 + i)
        cn = ControlNetModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            in_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            cross_attention_dim=CROSS_DIM,
            attention_head_dim=8,
            norm_num_groups=8,
            conditioning_embedding_out_channels=(16, 32, 64, 64),
        )
        open_controlnet(cn)
        cn.save_pretrained(root / REPOS[f"controlnet:{ctype}"])


def open_controlnet(cn: torch.nn.Module) -> None:
    """Open a random ControlNet's zero convolutions, so a control map visibly changes the
    output of a random tiny model."""
    with torch.no_grad():
        for block in list(cn.controlnet_down_blocks) + [cn.controlnet_mid_block]:
            torch.nn.init.normal_(block.weight, std=0.3)
        # The conditioning embedding ends in a zero conv too and its default init
        # shrinks the signal: without this the control map itself changes nothing.
        emb = cn.controlnet_cond_embedding
        for conv in [emb.conv_in, *emb.blocks, emb.conv_out]:
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            torch.nn.init.zeros_(conv.bias)


def build_image_encoder(root: Path, seed: int) -> None:
    """A tiny CLIP vision tower with projection and its image processor config."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    vision = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=CROSS_DIM, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, image_size=32, patch_size=4, projection_dim=CROSS_DIM,
        )
    )
    folder = root / REPOS["image_encoder"]
    vision.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor",
        "crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 32},
        "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "do_convert_rgb": True, "do_rescale": True, "rescale_factor": 1 / 255,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
    }))


def _open_gligen_gates(unet: torch.nn.Module) -> None:
    """Make boxes visibly steer the random tiny GLIGEN UNets.

    GLIGEN's gates start at 0 (tanh(0) = 0: the boxes change nothing); open them as training
    does, and sharpen the random grounding path (position-net output x10, gated attention q/k
    x4) so that moving one box changes many pixels, not just a few by one level.
    """
    from diffusers.models.attention import GatedSelfAttentionDense

    with torch.no_grad():
        last = unet.position_net.linears[-1]
        last.weight.mul_(10.0)
        last.bias.mul_(10.0)
        for module in unet.modules():
            if isinstance(module, GatedSelfAttentionDense):
                module.alpha_attn.fill_(1.0)
                module.alpha_dense.fill_(1.0)
                module.attn.to_q.weight.mul_(4.0)
                module.attn.to_k.weight.mul_(4.0)


def _build_lcm_lora(root: Path, seed: int) -> None:
    """A tiny LCM-LoRA in the diffusers LoRA format, training-free but non-zero."""
    write_lcm_lora(root, seed, unet_kwargs(), "StableDiffusionPipeline")


def write_lcm_lora(root: Path, seed: int, unet_kwargs: dict, pipeline: str) -> None:
    """A random, non-zero LoRA for a UNet built from `unet_kwargs`, written in the LoRA
    layout of the diffusers pipeline class named `pipeline`."""
    import diffusers
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(seed + 100)
    unet = UNet2DConditionModel(**unet_kwargs)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    folder = root / REPOS["lcm_lora"]
    folder.mkdir(parents=True, exist_ok=True)
    getattr(diffusers, pipeline).save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(unet), safe_serialization=True)


def build_taesd(root: Path, seed: int) -> None:
    """A tiny random TAESD (live previews) for the tiny VAE's 8x smaller latents."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed + 200)
    AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1),
    ).save_pretrained(root / REPOS["taesd"])


IP_EMBED_DIM = 24  # the tiny IP image encoder's embedding size (not CROSS_DIM, on purpose)


def _build_ip_adapter(root: Path, seed: int) -> None:
    """A tiny random IP-Adapter in h94/IP-Adapter's layout (`models/ip-adapter_sd15
    .safetensors` + `models/image_encoder/`, which has no preprocessor config, so CLIP's
    224 px default applies as for the real one), and a whole tiny CLIPModel with its
    tokenizer as the text tower (laion's repo is a whole CLIPModel too)."""
    write_ip_encoders(root, seed)
    write_ip_adapter(root / REPOS["ip_adapter"] / "models" / "ip-adapter_sd15.safetensors",
                     seed, unet_kwargs())


def write_ip_encoders(root: Path, seed: int) -> None:
    """The tiny IP-Adapter image encoder (`models/image_encoder/` of the adapter repo) and
    its text tower, a whole tiny CLIPModel with its tokenizer (as laion's repo)."""
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPTextConfig,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                  num_hidden_layers=2, image_size=224, patch_size=32,
                  projection_dim=IP_EMBED_DIM)
    torch.manual_seed(seed + 300)
    CLIPVisionModelWithProjection(CLIPVisionConfig(**vision)).save_pretrained(
        root / REPOS["ip_adapter"] / "models" / "image_encoder")
    text_folder = root / REPOS["ip_text"]
    vocab_size = write_tokenizer(text_folder)
    text = dict(bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                pad_token_id=vocab_size - 1, hidden_size=32, intermediate_size=37,
                num_attention_heads=4, num_hidden_layers=2, vocab_size=vocab_size,
                max_position_embeddings=77)
    torch.manual_seed(seed + 302)
    CLIPModel(CLIPConfig(text_config=CLIPTextConfig(**text).to_dict(),
                         vision_config=CLIPVisionConfig(**vision).to_dict(),
                         projection_dim=IP_EMBED_DIM)).save_pretrained(text_folder)


def write_ip_adapter(file: Path, seed: int, unet_config: dict) -> None:
    """A random plain IP-Adapter (`image_proj.*`, `ip_adapter.<n>.to_k_ip/to_v_ip`) for a
    UNet built from `unet_config`, in the key layout of h94's files."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    cross = unet_config["cross_attention_dim"]
    gen = torch.Generator().manual_seed(seed + 301)
    tensors = {
        "image_proj.proj.weight": torch.randn(4 * cross, IP_EMBED_DIM, generator=gen) * 0.2,
        "image_proj.proj.bias": torch.zeros(4 * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    unet = UNet2DConditionModel(**unet_config)
    key_id = 1
    for name in unet.attn_processors:
        if not name.endswith("attn2.processor"):
            continue
        attn = unet.get_submodule(name.rsplit(".", 1)[0])
        hidden = attn.to_k.out_features
        for kind in ("to_k_ip", "to_v_ip"):
            tensors[f"ip_adapter.{key_id}.{kind}.weight"] = torch.randn(
                hidden, cross, generator=gen) * 0.3
        key_id += 2
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(file))


# One builder per group of repos; a new model role adds its builder here.
BUILDERS = (_build_base, _build_task_unets, _build_controlnets, _build_lcm_lora,
            build_image_encoder, build_taesd, _build_ip_adapter)


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Serialise builds of one cache folder across processes (parallel test runs, workers)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".build.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_tiny_set(cache_dir: Path, name: str = "tiny", version: str = TINY_VERSION,
                    builders: tuple[Builder, ...] | None = None) -> Path:
    """Return a tiny set's folder under `cache_dir`, building it on first use (`builders`:
    another family's, for its tiny set)."""
    root = Path(cache_dir) / f"{name}-{version}"
    if (root / "TINY_VERSION").exists():
        return root
    with build_lock(Path(cache_dir)):
        if not (root / "TINY_VERSION").exists():  # another process may have built it
            build_tiny_set(root, builders=builders, version=version)
    return root
