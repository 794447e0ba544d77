"""Prompt-to-prompt (Hertz et al., "Prompt-to-Prompt Image Editing with Cross Attention
Control", 2022): render the source and the edited prompt in one batch from the same noise,
and give the edited image the source's attention so that its layout survives the edit.

- cross-attention: for the first `cross_replace` of the steps the edited image uses the
  source's maps: token for token (`replace`), through a token alignment that leaves added
  words their own maps (`refine`), or scaled per word (`reweight`, the paper's equalizer);
- self-attention: for the first `self_replace` of the steps the edited image uses the
  source's self-attention in the coarse layers (the paper: 16x16 and below at 512 px);
- local blend (optional): the maps of chosen words, averaged over the steps so far, mask
  the region allowed to change; outside it the edited latent is the source's.

Only the conditional half of a classifier-free-guidance batch is edited, as in the paper's
code. The maps are sized from the UNet (`processors.map_factor`), not from SD1.5's shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .processors import Layer

BLEND_THRESHOLD = 0.3  # the paper's local-blend threshold on the normalised word maps
BLEND_START = 0.2  # local blend applies after this fraction of the steps (later P2P code)


@dataclass
class EditPlan:
    """What the edit does, in token positions of the two prompts (length = the text
    encoder's sequence length)."""

    cross_steps: int
    self_steps: int
    mapper: list[int]
    alphas: list[float]
    equalizer: list[float] | None = None
    blend_source: list[int] = field(default_factory=list)
    blend_edited: list[int] = field(default_factory=list)


class PromptToPrompt:
    """The controller: rewrites the edited sample's attention, records local-blend maps."""

    def __init__(self, plan: EditPlan, map_factor: int, device: Any) -> None:
        self.plan, self.map_factor, self.step = plan, map_factor, 0
        self.mapper = torch.tensor(plan.mapper, device=device)
        self.alphas = torch.tensor(plan.alphas, device=device)
        self.equalizer = (torch.tensor(plan.equalizer, device=device)
                          if plan.equalizer is not None else None)
        self.blend_sum: torch.Tensor | None = None  # (2, queries) summed over steps, layers
        self.blend_count = 0

    @property
    def blends(self) -> bool:
        return bool(self.plan.blend_source or self.plan.blend_edited)

    def attend(self, layer: Layer, probs: torch.Tensor) -> torch.Tensor:
        if probs.shape[0] not in (2, 4):
            return probs
        half = probs.shape[0] - 2  # the conditional pair: (source, edited)
        source, edited = probs[half], probs[half + 1]
        if layer.cross:
            if self.blends and layer.factor == self.map_factor:
                self._record(probs[half:])
            if self.step >= self.plan.cross_steps:
                return probs
            mapped = source[..., self.mapper]
            new = mapped * self.alphas + edited * (1 - self.alphas)
            if self.equalizer is not None:
                new = new * self.equalizer
        else:
            if self.step >= self.plan.self_steps or layer.factor < self.map_factor:
                return probs
            new = source
        return torch.cat([probs[:half + 1], new[None].to(probs.dtype)], 0)

    def _record(self, pair: torch.Tensor) -> None:
        words = [self.plan.blend_source, self.plan.blend_edited]
        maps = torch.stack([pair[i].mean(0)[:, idx].sum(-1) if idx else
                            torch.zeros_like(pair[i, 0, :, 0]) for i, idx in enumerate(words)])
        maps = maps.float()
        self.blend_sum = maps if self.blend_sum is None else self.blend_sum + maps
        self.blend_count += 1

    def blend(self, latents: torch.Tensor, steps: int) -> torch.Tensor:
        """Local blend after a step: outside the words' region the edited latent is the
        source's (latents holds the pair (source, edited))."""
        if (not self.blends or self.blend_sum is None or latents.shape[0] != 2
                or self.step < round(BLEND_START * steps)):
            return latents
        height, width = latents.shape[-2:]
        h, w = height // self.map_factor, width // self.map_factor
        maps = (self.blend_sum / self.blend_count).view(2, 1, h, w)
        maps = F.max_pool2d(maps, 3, stride=1, padding=1)
        maps = F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)
        maps = maps / maps.flatten(1).amax(1).clamp_min(1e-8).view(2, 1, 1, 1)
        mask = (maps > BLEND_THRESHOLD).any(0, keepdim=True).to(latents.dtype)
        edited = latents[:1] + mask * (latents[1:] - latents[:1])
        return torch.cat([latents[:1], edited], 0)
