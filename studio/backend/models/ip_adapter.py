"""IP-Adapter (Ye et al. 2023) on the shared base UNet, installed for one call at a time.

The weights are the plain `ip-adapter_sd15` kind (and SDXL's `ip-adapter_sdxl_vit-h`, the
same design at SDXL's width): an image projection of one pooled CLIP
image embedding into 4 extra context tokens, and decoupled cross-attention K/V for them.
(Plus and FaceID adapters use patch tokens or face embeddings: they cannot do text diffs,
so they are refused with a message.)

Why not diffusers' `load_ip_adapter` / `unload_ip_adapter` as they are: loading installs the
adapter into the UNet for good (every later call through it must then pass image embeddings,
and the GLIGEN pipeline cannot), and unloading replaces *every* attention processor by a new
default one, which drops the shared UNet's own processor objects. So the adapter's
processors and projection are built once per UNet with diffusers' own converters (the code
`load_ip_adapter` runs), installed by `ip_adapted()` for the duration of one call, and the
UNet's own processors (the same objects), projection and config come back in a `finally`:
cancel, out of memory and errors included. Weights are read from safetensors only.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .speed import eager

# Where h94/IP-Adapter keeps the image encoder (ViT-H/14) every family's adapter uses; the
# adapter file is the family's (`Family.ip_adapter_weight`).
IP_ENCODER_SUBFOLDER = "models/image_encoder"
IP_PROJ_TYPE = "ip_image_proj"


@dataclass
class IPAdapterWeights:
    """An IP-Adapter's state dict, as diffusers' converters take it:
    `{"image_proj": {...}, "ip_adapter": {"1.to_k_ip.weight": ..., ...}}`."""

    state_dict: dict[str, dict[str, torch.Tensor]]
    source: str

    @property
    def embed_dim(self) -> int:
        """The image embedding size its projection takes (1024 for ViT-H/14)."""
        return int(self.state_dict["image_proj"]["proj.weight"].shape[-1])


def ip_adapter_file(source: str, hub_kwargs: dict[str, Any], weight: str) -> Path:
    """The adapter file of `source`: a .safetensors file, a folder in the h94 layout, or a
    Hub repo id (from the Hugging Face cache, or downloaded unless offline); `weight` is the
    file's path in the repo (`models/ip-adapter_sd15.safetensors`)."""
    path = Path(source)
    subfolder, _, name = weight.rpartition("/")
    if path.is_file():
        file = path
    elif path.is_dir():
        file = path / weight
        if not file.is_file():
            raise FileNotFoundError(f"no {weight} in {source}")
    else:
        from huggingface_hub import hf_hub_download

        file = Path(hf_hub_download(
            source, name, subfolder=subfolder or None,
            local_files_only=hub_kwargs.get("local_files_only", False),
            cache_dir=hub_kwargs.get("cache_dir")))
    if file.suffix != ".safetensors":
        raise ValueError(f"IP-Adapter weights must be a .safetensors file, got {file.name} "
                         "(pickled files can run code when loaded)")
    return file


def load_ip_adapter_weights(source: str, hub_kwargs: dict[str, Any], dtype: torch.dtype,
                            weight: str) -> IPAdapterWeights:
    """Read an IP-Adapter (safetensors; `weight` its path in the repo) into the nested form
    diffusers' converters take."""
    from safetensors.torch import load_file

    flat = load_file(str(ip_adapter_file(source, hub_kwargs, weight)))
    nested: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if head in nested:
            nested[head][rest] = value.to(dtype)
    if "proj.weight" not in nested["image_proj"] or not nested["ip_adapter"]:
        raise ValueError(
            f"{source} is not a plain IP-Adapter (image_proj.proj + ip_adapter.*.to_k_ip): "
            "Plus and FaceID adapters are not supported by the Remix tab")
    return IPAdapterWeights(nested, source)


# per UNet object: (its adapter processors by name, the image projection), built once
_BUILT: weakref.WeakKeyDictionary[Any, dict[str, tuple[dict[str, Any], Any]]] = (
    weakref.WeakKeyDictionary())


def _built(unet: Any, weights: IPAdapterWeights) -> tuple[dict[str, Any], Any]:
    from diffusers.models.embeddings import MultiIPAdapterImageProjection

    per_unet = _BUILT.setdefault(unet, {})
    if weights.source not in per_unet:
        sd = weights.state_dict
        converted = unet._convert_ip_adapter_attn_to_diffusers([sd], low_cpu_mem_usage=False)
        procs = {name: proc for name, proc in converted.items()
                 if name.endswith("attn2.processor")}
        projection = MultiIPAdapterImageProjection([
            unet._convert_ip_adapter_image_proj_to_diffusers(sd["image_proj"],
                                                             low_cpu_mem_usage=False)])
        per_unet[weights.source] = (procs, projection)
    return per_unet[weights.source]


@contextlib.contextmanager
def ip_adapted(unet: Any, weights: IPAdapterWeights, scale: float) -> Iterator[None]:
    """Inside the block, `unet` takes IP-Adapter image embeddings (`image_embeds` in
    `added_cond_kwargs`, i.e. a pipeline's `ip_adapter_image_embeds`) at `scale`; the UNet's
    own processors, projection and config come back afterwards, whatever happens.

    A compiled UNet (--compile) runs uncompiled meanwhile, as under the steering
    processors: a swap of processors would otherwise recompile it."""
    if unet.config.encoder_hid_dim_type is not None:
        raise ValueError("this UNet already has an encoder projection "
                         f"({unet.config.encoder_hid_dim_type}); IP-Adapter cannot be added")
    cross = unet.config.cross_attention_dim
    cross = cross[0] if isinstance(cross, (list, tuple)) else cross
    first_k = next(v for k, v in weights.state_dict["ip_adapter"].items()
                   if k.endswith("to_k_ip.weight"))
    if first_k.shape[-1] != cross:
        raise ValueError(f"the IP-Adapter {weights.source} was made for a UNet with "
                         f"cross-attention size {first_k.shape[-1]}, this one has {cross}")
    procs, projection = _built(unet, weights)
    device, dtype = unet.device, unet.dtype
    for proc in procs.values():
        proc.to(device=device, dtype=dtype)
        proc.scale = [float(scale)]
    projection.to(device=device, dtype=dtype)
    saved = dict(unet.attn_processors)
    unet.set_attn_processor({name: procs.get(name, proc) for name, proc in saved.items()})
    unet.encoder_hid_proj = projection
    unet.config.encoder_hid_dim_type = IP_PROJ_TYPE
    try:
        with eager(unet):
            yield
    finally:
        unet.set_attn_processor(saved)
        # as the UNet was built: a plain attribute None, no registered submodule
        unet._modules.pop("encoder_hid_proj", None)
        unet.__dict__["encoder_hid_proj"] = None
        unet.config.encoder_hid_dim_type = None


def guided_embeds(embed: torch.Tensor, guidance: bool, device: Any, dtype: Any
                  ) -> list[torch.Tensor]:
    """A pipeline's `ip_adapter_image_embeds` for one image embedding `embed` (D,): with
    classifier-free guidance `[cat(zeros, embed)]` shaped (2, 1, D), the zeros being what
    IP-Adapter was trained with as "no image"; without, (1, 1, D)."""
    e = embed.reshape(1, 1, -1).to(device=device, dtype=dtype)
    return [torch.cat([torch.zeros_like(e), e]) if guidance else e]
