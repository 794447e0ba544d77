"""Export a diffusers Stable Diffusion 1.x model as one A1111-style `.safetensors` checkpoint.

The single file uses the original latent-diffusion ("LDM") key layout that A1111, ComfyUI and
`StableDiffusionPipeline.from_single_file` read:

- UNet under `model.diffusion_model.`: `time_embed.{0,2}`, `input_blocks.N.{0,1}` (resnet,
  then attention; a downsampler is its own `input_blocks.N.0.op`), `middle_block.{0,1,2}`,
  `output_blocks.N.{0,1,2}` (resnet, attention, upsampler `.conv`), `out.{0,2}`. Resnets use
  `in_layers.{0,2}`, `emb_layers.1`, `out_layers.{0,3}`, `skip_connection`.
- VAE under `first_stage_model.`: `encoder.down.N.block.M`, `encoder.down.N.downsample`,
  `{encoder,decoder}.mid.{block_1,attn_1,block_2}` (attention q/k/v/proj_out as 1x1 convs),
  `norm_out`, `nin_shortcut`, and `decoder.up.N` numbered from the lowest resolution up, i.e.
  in the reverse order of diffusers' `up_blocks`.
- CLIP text model under `cond_stage_model.transformer.text_model.`.

Block counts are read from the models themselves (number of blocks, resnets per block, which
blocks have attention), so any SD1.x-shaped model converts, the tiny test models included.
Every tensor must land somewhere: an unmapped key is an error, never silently dropped.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

# diffusers ResnetBlock2D sub-module -> LDM ResBlock sub-module (UNet)
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
# diffusers ResnetBlock2D -> LDM VAE ResnetBlock (same names except the shortcut)
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
# diffusers Attention (VAE mid block) -> LDM AttnBlock
_VAE_ATTN = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


class _Renamer:
    """Maps diffusers keys to LDM keys by module prefix (+ optional sub-module renames)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rules: list[tuple[str, str, dict[str, str]]] = []

    def add(self, src: str, dst: str, sub: Mapping[str, str] | None = None) -> None:
        self.rules.append((src + ".", dst + ".", dict(sub or {})))

    def rename(self, key: str) -> str | None:
        for src, dst, sub in self.rules:
            if not key.startswith(src):
                continue
            rest = key[len(src):]
            for old, new in sub.items():
                if rest.startswith(old + "."):
                    rest = new + rest[len(old):]
                    break
            return dst + rest
        return None

    def convert(self, state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        lora = [k for k in state if "lora_" in k or ".base_layer." in k]
        if lora:
            raise ValueError(
                f"the {self.name} has LoRA adapters loaded ({lora[0]}, ...); fuse them "
                "(pipe.fuse_lora()) and unload them, or export the model without adapters"
            )
        out: dict[str, torch.Tensor] = {}
        missing = []
        for key, tensor in state.items():
            new = self.rename(key)
            if new is None:
                missing.append(key)
            else:
                out[prefix + new] = tensor
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise ValueError(
                f"cannot export the {self.name} as an SD1.x single-file checkpoint: "
                f"{len(missing)} weight(s) have no place in the LDM layout ({shown})"
            )
        return out


def _unet_renamer(unet: Any) -> _Renamer:
    r = _Renamer("UNet")
    r.add("time_embedding.linear_1", "time_embed.0")
    r.add("time_embedding.linear_2", "time_embed.2")
    r.add("conv_in", "input_blocks.0.0")
    r.add("conv_norm_out", "out.0")
    r.add("conv_out", "out.2")

    idx = 1  # input_blocks.0 is conv_in
    for b, block in enumerate(unet.down_blocks):
        has_attn = getattr(block, "attentions", None) is not None
        for i in range(len(block.resnets)):
            r.add(f"down_blocks.{b}.resnets.{i}", f"input_blocks.{idx}.0", _UNET_RESNET)
            if has_attn:
                r.add(f"down_blocks.{b}.attentions.{i}", f"input_blocks.{idx}.1")
            idx += 1
        if block.downsamplers is not None:
            r.add(f"down_blocks.{b}.downsamplers.0.conv", f"input_blocks.{idx}.0.op")
            idx += 1

    mid = unet.mid_block
    if mid is not None:
        r.add("mid_block.resnets.0", "middle_block.0", _UNET_RESNET)
        for i in range(len(getattr(mid, "attentions", None) or ())):
            r.add(f"mid_block.attentions.{i}", f"middle_block.{2 * i + 1}")
            r.add(f"mid_block.resnets.{i + 1}", f"middle_block.{2 * i + 2}", _UNET_RESNET)

    idx = 0
    for b, block in enumerate(unet.up_blocks):
        has_attn = getattr(block, "attentions", None) is not None
        n = len(block.resnets)
        for i in range(n):
            r.add(f"up_blocks.{b}.resnets.{i}", f"output_blocks.{idx}.0", _UNET_RESNET)
            if has_attn:
                r.add(f"up_blocks.{b}.attentions.{i}", f"output_blocks.{idx}.1")
            if i == n - 1 and block.upsamplers is not None:
                slot = 2 if has_attn else 1
                r.add(f"up_blocks.{b}.upsamplers.0.conv", f"output_blocks.{idx}.{slot}.conv")
            idx += 1
    return r


def _vae_renamer(vae: Any) -> _Renamer:
    r = _Renamer("VAE")
    for part in ("encoder", "decoder"):
        r.add(f"{part}.conv_in", f"{part}.conv_in")
        r.add(f"{part}.conv_out", f"{part}.conv_out")
        r.add(f"{part}.conv_norm_out", f"{part}.norm_out")
        mid = getattr(vae, part).mid_block
        r.add(f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", _VAE_RESNET)
        r.add(f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", _VAE_RESNET)
        if getattr(mid, "attentions", None) and mid.attentions[0] is not None:
            r.add(f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", _VAE_ATTN)
    for b, block in enumerate(vae.encoder.down_blocks):
        src, dst = f"encoder.down_blocks.{b}", f"encoder.down.{b}"
        for i in range(len(block.resnets)):
            r.add(f"{src}.resnets.{i}", f"{dst}.block.{i}", _VAE_RESNET)
        if block.downsamplers is not None:
            r.add(f"{src}.downsamplers.0.conv", f"{dst}.downsample.conv")
    n_up = len(vae.decoder.up_blocks)
    for b, block in enumerate(vae.decoder.up_blocks):
        ldm = n_up - 1 - b  # LDM numbers decoder levels from the lowest resolution up
        for i in range(len(block.resnets)):
            r.add(f"decoder.up_blocks.{b}.resnets.{i}", f"decoder.up.{ldm}.block.{i}", _VAE_RESNET)
        if block.upsamplers is not None:
            r.add(f"decoder.up_blocks.{b}.upsamplers.0.conv", f"decoder.up.{ldm}.upsample.conv")
    for name in ("quant_conv", "post_quant_conv"):
        r.add(name, name)
    return r


def _vae_attention_as_conv(state: dict[str, torch.Tensor]) -> None:
    """LDM's VAE attention uses 1x1 convs: linear [out, in] weights become [out, in, 1, 1]."""
    for key, tensor in state.items():
        if ".mid.attn_1." in key and key.endswith(".weight") and tensor.ndim == 2:
            state[key] = tensor.reshape(*tensor.shape, 1, 1)


def _clip_state(text_encoder: Any) -> dict[str, torch.Tensor]:
    out = {}
    for key, tensor in text_encoder.state_dict().items():
        # transformers >= 5.6 flattened CLIPTextModel (no `text_model.` level); LDM keeps it.
        if key.startswith("text_projection."):
            raise ValueError(
                "the text encoder has a projection layer (CLIPTextModelWithProjection); an SD1.x "
                "single-file checkpoint holds a plain CLIPTextModel"
            )
        inner = key if key.startswith("text_model.") else "text_model." + key
        out[CLIP_PREFIX + inner] = tensor
    return out


def diffusers_to_ldm_state_dict(unet: Any, vae: Any, text_encoder: Any) -> dict[str, torch.Tensor]:
    """One LDM-layout state dict (UNet, VAE, CLIP text encoder) from diffusers/transformers models.

    The tensors are the models' own (no copies), except the VAE attention weights, which are
    reshaped views. Raises ValueError when a weight has no place in the SD1.x layout.
    """
    state = _unet_renamer(unet).convert(unet.state_dict(), UNET_PREFIX)
    vae_state = _vae_renamer(vae).convert(vae.state_dict(), VAE_PREFIX)
    _vae_attention_as_conv(vae_state)
    state.update(vae_state)
    state.update(_clip_state(text_encoder))
    return state


def _components(source: Any) -> tuple[Any, Any, Any]:
    """(unet, vae, text_encoder) from a diffusers folder, a pipeline or a mapping."""
    if isinstance(source, (str, os.PathLike)):
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        folder = Path(source)
        if not (folder / "model_index.json").is_file():
            raise ValueError(
                f"'{folder}' is not a diffusers model folder (no model_index.json); pass the "
                "folder that holds unet/, vae/ and text_encoder/"
            )
        return (
            UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True),
            AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True),
            CLIPTextModel.from_pretrained(
                str(folder), subfolder="text_encoder", local_files_only=True
            ),
        )
    get = source.get if isinstance(source, Mapping) else lambda name: getattr(source, name, None)
    parts = tuple(get(name) for name in ("unet", "vae", "text_encoder"))
    missing = [n for n, p in zip(("unet", "vae", "text_encoder"), parts, strict=True) if p is None]
    if missing:
        raise ValueError(f"cannot export a checkpoint without: {', '.join(missing)}")
    return parts  # type: ignore[return-value]


def save_single_file(
    folder_or_components: Any,
    path: str | os.PathLike[str],
    dtype: torch.dtype | None = None,
) -> Path:
    """Write one A1111-style `.safetensors` checkpoint (LDM layout) and return its path.

    `folder_or_components` is a diffusers SD1.x folder, a pipeline, or a mapping with `unet`,
    `vae` and `text_encoder`. `dtype` (e.g. torch.float16) converts floating tensors; None
    keeps them. The file is written atomically (a half-written checkpoint is never visible).
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(
            f"'{path}' must end in .safetensors (pickled .ckpt files can run code when loaded)"
        )
    unet, vae, text_encoder = _components(folder_or_components)
    state = diffusers_to_ldm_state_dict(unet, vae, text_encoder)
    out = {}
    for key, tensor in state.items():
        t = tensor.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[key] = t.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".safetensors", dir=path.parent)
    os.close(fd)
    try:
        save_file(out, tmp, metadata={"format": "pt", "layout": "ldm-sd1"})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# ---------------------------------------------------------------------- SDXL
# SDXL's original (SGM) layout: the UNet as above plus its size/crop embedding (`label_emb`),
# the VAE as above, CLIP ViT-L as `conditioner.embedders.0.transformer.` and OpenCLIP ViT-bigG
# as `conditioner.embedders.1.model.` in OpenCLIP's own names (fused q/k/v `in_proj`, `ln_1`,
# `mlp.c_fc`, a `text_projection` matrix applied as x @ P, i.e. the Linear weight transposed).
XL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
XL_CLIP_G_PREFIX = "conditioner.embedders.1.model."
_OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc",
                   "mlp.fc2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"}


def _openclip_state(text_encoder_2: Any) -> dict[str, torch.Tensor]:
    """A CLIPTextModelWithProjection's weights in OpenCLIP's layout (every tensor placed)."""
    state = {k[len("text_model."):] if k.startswith("text_model.") else k: v
             for k, v in text_encoder_2.state_dict().items()}
    p, out = XL_CLIP_G_PREFIX, {}
    out[p + "token_embedding.weight"] = state.pop("embeddings.token_embedding.weight")
    out[p + "positional_embedding"] = state.pop("embeddings.position_embedding.weight")
    state.pop("embeddings.position_ids", None)
    for part in ("weight", "bias"):
        out[p + f"ln_final.{part}"] = state.pop(f"final_layer_norm.{part}")
    out[p + "text_projection"] = state.pop("text_projection.weight").T.contiguous()
    for i in range(text_encoder_2.config.num_hidden_layers):
        src, dst = f"encoder.layers.{i}.", f"{p}transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[dst + f"attn.in_proj_{part}"] = torch.cat(
                [state.pop(f"{src}self_attn.{q}_proj.{part}") for q in ("q", "k", "v")])
            for old, new in _OPENCLIP_LAYER.items():
                out[dst + f"{new}.{part}"] = state.pop(f"{src}{old}.{part}")
    if state:
        raise ValueError(f"the second text encoder has weights OpenCLIP has no place for: "
                         f"{', '.join(sorted(state)[:5])}")
    return out


def save_single_file_xl(folder: str | os.PathLike[str], path: str | os.PathLike[str],
                        dtype: torch.dtype | None = None) -> Path:
    """Write a diffusers SDXL folder as one original-layout (SGM) `.safetensors` checkpoint,
    as SDXL fine-tunes are shared (both text encoders included); `dtype` (e.g. fp16, as
    sites share them) also bounds the memory a real-size conversion needs."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder, path = Path(folder), Path(path)
    kw: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kw["dtype"] = dtype
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kw)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw)
    clip_l = CLIPTextModel.from_pretrained(str(folder), subfolder="text_encoder", **kw)
    clip_g = CLIPTextModelWithProjection.from_pretrained(str(folder),
                                                         subfolder="text_encoder_2", **kw)
    renamer = _unet_renamer(unet)
    renamer.add("add_embedding.linear_1", "label_emb.0.0")
    renamer.add("add_embedding.linear_2", "label_emb.0.2")
    state = renamer.convert(unet.state_dict(), UNET_PREFIX)
    vae_state = _vae_renamer(vae).convert(vae.state_dict(), VAE_PREFIX)
    _vae_attention_as_conv(vae_state)
    state.update(vae_state)
    state.update({XL_CLIP_L_PREFIX + k[len(CLIP_PREFIX):]: v
                  for k, v in _clip_state(clip_l).items()})
    state.update(_openclip_state(clip_g))
    out = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata={"format": "pt", "layout": "sgm-sdxl"})
    return path
