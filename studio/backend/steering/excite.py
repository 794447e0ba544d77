"""Attend-and-Excite (Chefer et al., "Attend-and-Excite: Attention-Based Semantic Guidance
for Text-to-Image Diffusion Models", SIGGRAPH 2023): during the first half of the steps, move
the latent so that every subject token's strongest cross-attention is high, so that no
subject of a multi-object prompt is neglected.

As in the paper: the maps are the coarse down/up cross-attention maps averaged over heads and
layers (16x16 for SD1.5 at 512 px; sized from the UNet here), softmaxed over the text tokens
without the start token (x100), smoothed with a 3x3 Gaussian (sigma 0.5); the loss is the
worst subject's `1 - max`; the step size is 20 x sqrt(a scale from 1 to 0.5 over the steps);
at the paper's steps 0/10/20 of 50 (here the same fractions of the step count) the update is
repeated until the loss is under 0.95 / 0.5 / 0.2 (at most 20 times).

The update runs between the pipeline's steps (its step-end callback), on the latent the
next step starts from, and repeats the UNet call the pipeline just made (its text embeddings
and any GLIGEN grounding inputs, conditional half) with gradients on. The very first step is
taken as is: its latent is pure noise, and the paper's first threshold (0.05) is met there.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from ..requests import RequestError
from . import tokens
from .processors import Layer, map_factor, recorded_calls, steered

FAST_NOTE = ("Attend-and-Excite is off in fast mode: its latent updates need the many small "
             "steps of normal sampling (LCM takes 4). Untick Fast mode to use it.")

SCALE_FACTOR = 20.0
ALTER_FRACTION = 0.5  # 25 of 50 steps
REFINE_AT = {0.0: 0.05, 0.2: 0.5, 0.4: 0.8}  # step fraction -> attention threshold
MAX_REFINE = 20


def _gaussian_kernel(device: Any, dtype: Any) -> torch.Tensor:
    x = torch.arange(3, dtype=torch.float32) - 1
    g = torch.exp(-(x ** 2) / (2 * 0.5 ** 2))
    k = torch.outer(g, g)
    return (k / k.sum()).to(device=device, dtype=dtype).view(1, 1, 3, 3)


class AttendExcite:
    """The controller (records the coarse cross-attention maps while `active`) and the
    latent update."""

    def __init__(self, subject_positions: list[int], last_position: int, steps: int,
                 map_factor: int) -> None:
        self.positions, self.last, self.map_factor = subject_positions, last_position, map_factor
        self.set_steps(steps)
        self.maps: list[torch.Tensor] = []
        self.active = False
        self.losses: list[float] = []  # the loss after each step's update (for info)
        self.updates = 0

    def set_steps(self, steps: int) -> None:
        """The step thresholds, as the paper's fractions of this step count."""
        self.steps = steps
        self.alter_until = max(1, round(ALTER_FRACTION * steps))
        self.refine = {round(f * steps): t for f, t in REFINE_AT.items()}

    def attend(self, layer: Layer, probs: torch.Tensor) -> torch.Tensor:
        if self.active and layer.cross and layer.factor == self.map_factor:
            self.maps.append(probs.mean(1))  # (batch, queries, keys)
        return probs

    def text_maps(self, unet: Any, latents: torch.Tensor, timestep: Any,
                  call: dict[str, Any], scale: Any) -> torch.Tensor:
        """The coarse cross-attention maps of the conditional UNet call on `latents`,
        softmaxed over the text tokens without the start token (x100): (queries, tokens)."""
        self.maps, self.active = [], True
        try:
            unet(scale(latents, timestep), timestep, **_conditional(call, latents.shape[0]))
        finally:
            self.active = False
        maps = torch.stack(self.maps).mean(0)[0].float()  # (queries, keys)
        return torch.softmax(maps[:, 1:self.last] * 100, dim=-1)

    def subject_map(self, text: torch.Tensor, position: int, latents: torch.Tensor
                    ) -> torch.Tensor:
        """Token `position`'s map from `text_maps`, smoothed, shaped (1, 1, h, w)."""
        height, width = latents.shape[-2:]
        h, w = height // self.map_factor, width // self.map_factor
        m = text[:, position - 1].view(1, 1, h, w)
        kernel = _gaussian_kernel(text.device, text.dtype)
        return F.conv2d(F.pad(m, (1, 1, 1, 1), mode="reflect"), kernel)

    def loss(self, unet: Any, latents: torch.Tensor, timestep: Any, call: dict[str, Any],
             scale: Any) -> torch.Tensor:
        """`1 - max attention` of the most neglected subject, differentiable in `latents`."""
        text = self.text_maps(unet, latents, timestep, call, scale)
        worst = [torch.clamp(1 - self.subject_map(text, position, latents).max(), min=0)
                 for position in self.positions]
        return torch.stack(worst).max()

    def update(self, unet: Any, latents: torch.Tensor, step: int, timestep: Any,
               call: dict[str, Any], scale: Any) -> torch.Tensor:
        """The latent for step `step`, moved towards every subject being attended."""
        if step >= self.alter_until or not call:
            return latents
        size = SCALE_FACTOR * math.sqrt(1.0 - 0.5 * step / max(1, self.steps - 1))
        threshold = self.refine.get(step)
        with torch.enable_grad():
            x = latents.detach().clone().requires_grad_(True)
            for i in range(MAX_REFINE if threshold is not None else 1):
                loss = self.loss(unet, x, timestep, call, scale)
                if threshold is not None and loss.item() < 1 - threshold:
                    break
                if loss.item() == 0:
                    break
                grad = torch.autograd.grad(loss, [x])[0]
                x = (x - size * grad).detach().requires_grad_(True)
                self.updates += 1
                if threshold is None and i == 0:
                    break
        self.losses.append(round(float(loss.item()), 4))
        return x.detach().to(latents.dtype)


def _conditional(call: dict[str, Any], batch: int) -> dict[str, Any]:
    """The recorded UNet call's keyword arguments for the conditional half only (with
    classifier-free guidance the pipeline batches [unconditional, conditional])."""

    def half(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == 2 * batch:
            return value[batch:]
        if isinstance(value, dict):
            return {k: half(v) for k, v in value.items()}
        return value

    return {k: half(v) for k, v in call.items() if k not in ("_args", "return_dict")}


class Excitation:
    """Attend-and-Excite for one pipeline call: install with `steered(unet, self.excite,
    self.select)` and `recorded_calls(unet)`, then call `after_step` from the step-end
    callback with the latents the next step starts from."""

    def __init__(self, pipe: Any, prompt: str, excite_words: str, steps: int) -> None:
        tokenizer = pipe.tokenizer
        listed = [w.strip() for w in excite_words.split(",") if w.strip()]
        chosen = listed or tokens.subject_words(prompt)
        positions: list[int] = []
        self.words: list[str] = []
        for word in chosen:
            spots = tokens.positions_of(tokenizer, prompt, word)
            if not spots and listed:
                raise RequestError(f"excite_words: {word!r} is not a word of the prompt "
                                   f"{prompt!r}; list words of the prompt, separated by commas")
            if spots:
                positions.append(spots[-1])  # a multi-token word: its last token
                self.words.append(word)
        self.pipe = pipe
        self.unet = pipe.unet
        last = len(tokens.prompt_tokens(tokenizer, prompt)) - 1  # the end token's position
        self.excite = AttendExcite(positions, last, steps, map_factor(self.unet))
        self.call: dict[str, Any] = {}

    def select(self, layer: Layer) -> bool:
        return layer.cross and layer.factor == self.excite.map_factor and layer.place != "mid"

    def after_step(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        """The latent for the step after `step` (0-based), updated while in the first half."""
        if not self.excite.positions:
            return latents
        scheduler = self.pipe.scheduler
        index = getattr(scheduler, "step_index", None)
        index = step + 1 if index is None else int(index)
        if index >= len(scheduler.timesteps):
            return latents
        if self.excite.steps != len(scheduler.timesteps):  # e.g. second-order samplers
            self.excite.set_steps(len(scheduler.timesteps))
        return self.excite.update(self.unet, latents, index, scheduler.timesteps[index],
                                  self.call, scheduler.scale_model_input)

    def info(self) -> dict[str, Any]:
        return {"excite_words": self.words, "excite_updates": self.excite.updates,
                "excite_losses": self.excite.losses}


def excitation_for(pipe: Any, req: Any, steps: int, info: dict[str, Any],
                   prompt: str | None = None) -> Excitation | None:
    """The request's Attend-and-Excite, or None (off, or fast mode: noted in info)."""
    if not getattr(req, "attend_excite", False):
        return None
    if req.fast:
        info.setdefault("warnings", []).append(FAST_NOTE)
        info["attend_excite_note"] = FAST_NOTE
        return None
    excitation = Excitation(pipe, prompt if prompt is not None else req.prompt,
                            req.excite_words, steps)
    if not excitation.words:
        note = ("Attend-and-Excite found no subject words in the prompt; list them in "
                "excite_words.")
        info.setdefault("warnings", []).append(note)
        info["attend_excite_note"] = note
        return None
    return excitation


@contextlib.contextmanager
def excited(excitation: Excitation | None) -> Iterator[None]:
    """Install the excitation's processors and call recorder on its UNet for one call (and
    take them off again, whatever happens)."""
    if excitation is None:
        yield
        return
    with steered(excitation.unet, excitation.excite, excitation.select), \
            recorded_calls(excitation.unet) as call:
        excitation.call = call
        yield
