"""The `tiny-xl` model set: random miniature SDXL models, built like the `tiny` set.

SDXL's architecture at toy width: two CLIP text encoders (the second with a projection, whose
pooled output joins the size/crop micro-conditioning through the UNet's `text_time`
embedding), a UNet whose cross-attention reads both encoders' states side by side, its
inpainting (9 ch) and InstructPix2Pix (8 ch) UNets, ControlNets with the same conditioning,
ControlNet Union, a TAESD, an LCM-LoRA, an IP-Adapter and a CLIP image tower. Saved in the
Hub layout of the real repos and loaded through the same `from_pretrained` code; the images
are noise (wiring only).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .families.sdxl import SCHEDULER
from .modelsets import CONTROL_TYPES, REPOS
from .tiny import (
    build_image_encoder,
    build_taesd,
    ensure_tiny_set,
    open_controlnet,
    save_pipeline_index,
    unet_kwargs,
    write_base_parts,
    write_ip_adapter,
    write_ip_encoders,
    write_lcm_lora,
)
from .tokenizer_vocab import write_tokenizer

TINY_XL_VERSION = "xl5"  # bump when the configs below change, so caches are rebuilt
# the text encoders' widths: different, as SDXL's (768 and 1280), so nothing can mistake one
# for the other (diffusers' single-file loader tells them apart by width); the UNet attends
# to both side by side
TEXT_DIM, TEXT_DIM_2 = 32, 48
TIME_DIM = 8  # addition_time_embed_dim: each of the 6 size/crop numbers embeds to this


# SDXL's UNet on the tiny set's: attention over both encoders' states side by side, linear
# projections, and the `text_time` embedding of 6 micro-conditioning numbers plus the second
# encoder's pooled, projected embedding
XL_UNET = dict(
    cross_attention_dim=TEXT_DIM + TEXT_DIM_2,
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=TIME_DIM,
    transformer_layers_per_block=(1, 2),
    projection_class_embeddings_input_dim=6 * TIME_DIM + TEXT_DIM_2,
)


def _unet_kwargs(**extra: object) -> dict:
    return unet_kwargs(**XL_UNET, **extra)


def scheduler_config() -> dict:
    """SDXL base's own scheduler config (Euler, SD's noise schedule, leading spacing)."""
    return dict(SCHEDULER)


def _text_encoders(base: Path, seed: int) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    vocab_size = write_tokenizer(base / "tokenizer")
    write_tokenizer(base / "tokenizer_2")
    def config(width: int) -> CLIPTextConfig:
        return CLIPTextConfig(
            bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1, hidden_size=width, intermediate_size=37,
            layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2,
            vocab_size=vocab_size, max_position_embeddings=77, projection_dim=width,
            hidden_act="gelu")

    torch.manual_seed(seed)
    CLIPTextModel(config(TEXT_DIM)).save_pretrained(base / "text_encoder")
    torch.manual_seed(seed + 1)
    CLIPTextModelWithProjection(config(TEXT_DIM_2)).save_pretrained(base / "text_encoder_2")


def _build_base(root: Path, seed: int) -> None:
    """The base repo, laid out as stabilityai/stable-diffusion-xl-base-1.0."""
    base = root / REPOS["base"]
    write_base_parts(base, seed, _unet_kwargs(), scheduler_config())
    _text_encoders(base, seed)
    save_pipeline_index(base, "StableDiffusionXLPipeline", {
        "unet": ("diffusers", "UNet2DConditionModel"),
        "vae": ("diffusers", "AutoencoderKL"),
        "text_encoder": ("transformers", "CLIPTextModel"),
        "text_encoder_2": ("transformers", "CLIPTextModelWithProjection"),
        "tokenizer": ("transformers", "CLIPTokenizer"),
        "tokenizer_2": ("transformers", "CLIPTokenizer"),
        "scheduler": ("diffusers", "EulerDiscreteScheduler"),
    })


def _build_task_unets(root: Path, seed: int) -> None:
    """The inpainting (9 ch) and InstructPix2Pix (8 ch) UNets, each its own repo."""
    from diffusers import UNet2DConditionModel

    for key, channels in (("inpaint", 9), ("instruct", 8)):
        torch.manual_seed(seed + 1)
        UNet2DConditionModel(**_unet_kwargs(in_channels=channels)).save_pretrained(
            root / REPOS[key] / "unet")


def _build_controlnets(root: Path, seed: int) -> None:
    """One SDXL ControlNet per type (text_time conditioning too), with open zero convs so a
    control map visibly changes the output."""
    from diffusers import ControlNetModel

    keep = ("block_out_channels", "layers_per_block", "in_channels", "down_block_types",
            "cross_attention_dim", "attention_head_dim", "use_linear_projection",
            "addition_embed_type", "addition_time_embed_dim", "transformer_layers_per_block",
            "projection_class_embeddings_input_dim", "norm_num_groups")
    kwargs = {k: v for k, v in _unet_kwargs().items() if k in keep}
    for i, ctype in enumerate(CONTROL_TYPES):
        torch.manual_seed(seed + 10 + i)
        cn = ControlNetModel(**kwargs, conditioning_embedding_out_channels=(16, 32, 64, 64))
        open_controlnet(cn)
        cn.save_pretrained(root / REPOS[f"controlnet:{ctype}"])


def _build_controlnet_union(root: Path, seed: int) -> None:
    """A tiny ControlNet Union in xinsir's layout (6 control types), its zero convolutions
    and its type projection opened so both the map and the mode change the output."""
    from diffusers import ControlNetUnionModel

    keep = ("block_out_channels", "layers_per_block", "in_channels", "down_block_types",
            "cross_attention_dim", "attention_head_dim", "use_linear_projection",
            "addition_embed_type", "addition_time_embed_dim", "transformer_layers_per_block",
            "projection_class_embeddings_input_dim", "norm_num_groups")
    kwargs = {k: v for k, v in _unet_kwargs().items() if k in keep}
    width = kwargs["block_out_channels"][0]
    torch.manual_seed(seed + 20)
    union = ControlNetUnionModel(
        **kwargs, conditioning_embedding_out_channels=(16, 32, 64, 64), num_control_type=6,
        num_trans_channel=width, num_trans_head=4, num_trans_layer=1, num_proj_channel=width)
    open_controlnet(union)
    with torch.no_grad():
        torch.nn.init.normal_(union.spatial_ch_projs.weight, std=0.3)
    union.save_pretrained(root / REPOS["controlnet_union"])


def _build_lcm_lora(root: Path, seed: int) -> None:
    """A tiny LCM-LoRA in the diffusers SDXL LoRA format, training-free but non-zero."""
    write_lcm_lora(root, seed, _unet_kwargs(), "StableDiffusionXLPipeline")


def _build_ip_adapter(root: Path, seed: int) -> None:
    """A tiny SDXL IP-Adapter where h94/IP-Adapter keeps SDXL's
    (`sdxl_models/ip-adapter_sdxl_vit-h.safetensors`), with the tiny set's image encoder in
    `models/image_encoder` (SDXL's ViT-H adapter uses SD1.5's encoder) and its text tower."""
    write_ip_encoders(root, seed)
    write_ip_adapter(root / REPOS["ip_adapter"] / "sdxl_models"
                     / "ip-adapter_sdxl_vit-h.safetensors", seed, _unet_kwargs())


# the image encoder is SeedSelect's judge of likeness (family-independent: the tiny set's)
BUILDERS = (_build_base, _build_task_unets, _build_controlnets, _build_lcm_lora, build_taesd,
            _build_ip_adapter, build_image_encoder, _build_controlnet_union)


def ensure_tiny_xl_set(cache_dir: Path) -> Path:
    """The tiny SDXL set's folder under `cache_dir`, built on first use."""
    return ensure_tiny_set(cache_dir, "tiny-xl", TINY_XL_VERSION, BUILDERS)
