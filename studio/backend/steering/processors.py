"""Attention processors that let a controller read and rewrite attention maps.

Diffusers' own helpers do not fit the shared UNet: `StableDiffusionAttendAndExcitePipeline`
is deprecated and leaves its processors installed when a call fails, and prompt-to-prompt
exists only as a community pipeline whose local blend hard-codes SD1.5's 512 px layer shapes.
These processors are sized from the UNet itself (each layer's downsampling factor comes from
its block), so they work at any resolution and in the toy UNet, and `steered` restores the
original processors in a `finally`: cancel, out of memory and errors included.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..models.speed import eager

_LAYER = re.compile(r"^(down_blocks|up_blocks|mid_block)\.?(\d*)\..*\.(attn1|attn2)\.processor$")


@dataclass(frozen=True)
class Layer:
    """One attention layer of the UNet: `factor` is its downsampling from the latent (1, 2,
    4, ...), `cross` is True for cross-attention (attn2) and `place` is down, mid or up."""

    name: str
    place: str
    factor: int
    cross: bool


class Controller(Protocol):
    def attend(self, layer: Layer, probs: torch.Tensor) -> torch.Tensor:
        """Given `probs` shaped (batch, heads, queries, keys), return the probabilities to
        use (the same tensor, or a new one of the same shape)."""
        ...


def unet_layers(unet: Any) -> dict[str, Layer]:
    """The self- and cross-attention layers of the UNet's transformer blocks, by processor
    name (GLIGEN's fuser attention and other inner layers are left out)."""
    config = unet.config
    n_down, n_up = len(config.down_block_types), len(config.up_block_types)
    layers = {}
    for name in unet.attn_processors:
        match = _LAYER.match(name)
        if not match or ".fuser." in name:
            continue
        place, index, kind = match.groups()
        if place == "down_blocks":
            factor = 2 ** int(index)
        elif place == "up_blocks":
            factor = 2 ** (n_up - 1 - int(index))
        else:
            factor = 2 ** (n_down - 1)
        layers[name] = Layer(name, place.split("_")[0], factor, kind == "attn2")
    return layers


def map_factor(unet: Any) -> int:
    """The factor of the coarsest down/up cross-attention layers: where both methods read
    their maps (16x16 for SD1.5 at 512 px, as in both papers; 8x8 in the 64 px toy UNet)."""
    return max(layer.factor for layer in unet_layers(unet).values()
               if layer.cross and layer.place != "mid")


class SteeringProcessor:
    """Diffusers' `AttnProcessor` with one hook: the attention probabilities pass through
    the controller before they weigh the values (explicit probabilities, as both methods
    need them; only the layers a method touches get this processor)."""

    def __init__(self, controller: Controller, layer: Layer) -> None:
        self.controller, self.layer = controller, layer

    def __call__(self, attn: Any, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, length, _ = (hidden_states.shape if encoder_hidden_states is None
                            else encoder_hidden_states.shape)
        attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        query = attn.head_to_batch_dim(query)

        probs = attn.get_attention_scores(query, key, attention_mask)
        shaped = probs.view(-1, attn.heads, *probs.shape[1:])
        probs = self.controller.attend(self.layer, shaped).reshape(probs.shape)

        hidden_states = attn.batch_to_head_dim(torch.bmm(probs.to(value.dtype), value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextlib.contextmanager
def steered(unet: Any, controller: Controller, select: Callable[[Layer], bool]
            ) -> Iterator[dict[str, Layer]]:
    """Route the layers `select` picks through `controller` for the duration of the block;
    the UNet's own processors (the same objects) come back afterwards, whatever happens.

    A compiled UNet (--compile) runs uncompiled meanwhile: compiled, every swap of
    processors would trigger a recompilation."""
    saved = dict(unet.attn_processors)
    layers = {name: layer for name, layer in unet_layers(unet).items() if select(layer)}
    unet.set_attn_processor({name: SteeringProcessor(controller, layers[name])
                             if name in layers else proc for name, proc in saved.items()})
    try:
        with eager(unet):
            yield layers
    finally:
        unet.set_attn_processor(saved)


@contextlib.contextmanager
def recorded_calls(unet: Any) -> Iterator[dict[str, Any]]:
    """Record the keyword arguments of the UNet's latest call (its text embeddings and, under
    GLIGEN, its grounding inputs): Attend-and-Excite repeats that call on the edited latent."""
    last: dict[str, Any] = {}

    def hook(module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        last.clear()
        last.update(kwargs)
        last["_args"] = args

    handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield last
    finally:
        handle.remove()
