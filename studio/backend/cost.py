"""What a job costs in seconds on this machine: the one place every feature adds its cost.

A request's `work()` counts denoiser passes times megapixels (steps x guidance passes, plus
what a feature adds: ControlNets, Attend-and-Excite's updates, training's backward passes;
later hires passes, best-of-N, guidance gradients). That is linear in the pixels, but a pass
is not: self-attention grows with the square of the tokens, so one step at 2048x2048 costs
far more than 16 steps at 512x512. `Rate` prices a pass as `linear x mp + quadratic x mp^2`
seconds, and a job as `work x (linear + quadratic x mp)`.

`calibrate` measures it at start-up on the machine that runs the jobs, in one pass at a
small size: it counts the denoiser's operations there (convolutions and linear layers grow
with the pixels, cross-attention too; self-attention's score and mix products with their
square) and times the pass, so the machine's speed and the model's own shape both come in,
and a large size is priced without ever running one. The Studio refuses a job whose
estimate is over its time budget before it runs; the deadline inside the step
(`deadline.py`) stops whatever the estimate misses.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

STEPS_SHORT, STEPS_LONG = 1, 3  # the calibration's short and long runs


@dataclass(frozen=True)
class Rate:
    """Seconds per denoiser pass of `mp` megapixels: linear x mp + quadratic x mp^2."""

    linear: float
    quadratic: float

    def pass_seconds(self, megapixels: float) -> float:
        return megapixels * (self.linear + self.quadratic * megapixels)

    def job_seconds(self, work: float, megapixels: float) -> float:
        """Seconds for `work` megapixel-passes, each pass of `megapixels`."""
        return work * (self.linear + self.quadratic * megapixels)


def _timed(pipe: Any, side: int, steps: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        pipe(prompt="calibration", num_inference_steps=steps, guidance_scale=5.0,
             width=side, height=side, output_type="latent",
             generator=torch.Generator("cpu").manual_seed(0))
    return time.perf_counter() - start


class OperationCount:
    """Multiply-adds of a model's forward passes while installed: `linear` (grows with the
    pixels) and `quadratic` (self-attention's products, with their square)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.linear = self.quadratic = 0.0
        self._handles = []
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                self._handles.append(module.register_forward_hook(self._layer))
            elif type(module).__name__ == "Attention":
                self._handles.append(module.register_forward_pre_hook(self._attention,
                                                                      with_kwargs=True))

    def _layer(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if isinstance(module, torch.nn.Conv2d):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        else:
            per_output = module.in_features
        self.linear += float(output.numel()) * per_output

    def _attention(self, module: Any, args: Any, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        context = kwargs.get("encoder_hidden_states")
        if context is None and len(args) > 1:
            context = args[1]
        if hidden is None:
            return
        batch, channels = hidden.shape[0], hidden.shape[1 if hidden.ndim == 4 else -1]
        queries = math.prod(hidden.shape[2:]) if hidden.ndim == 4 else hidden.shape[1]
        if context is None:  # self-attention: scores and mix, queries x queries
            self.quadratic += 2.0 * batch * queries * queries * channels
        else:
            self.linear += 2.0 * batch * queries * context.shape[1] * channels

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def calibrate(pipe: Any, native: int) -> Rate:
    """One pass of the guided text-to-image `pipe` at half the models' native side (at
    least 64 px), counted and timed: the difference between a long and a short run is the
    steps alone (no text encoding, no decode), two passes each."""
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    side = max(64, native // 2 // 8 * 8)
    kept = dict(getattr(pipe, "_progress_bar_config", {}))
    pipe.set_progress_bar_config(disable=True)
    try:
        count = OperationCount(denoiser)  # counted in the warm-up run, which is not timed
        try:
            _timed(pipe, side, STEPS_SHORT)  # warm-up: first-call allocations
        finally:
            count.remove()
        seconds = _timed(pipe, side, STEPS_LONG) - _timed(pipe, side, STEPS_SHORT)
    finally:
        pipe._progress_bar_config = kept
    per_pass = max(seconds, 1e-6) / (2 * (STEPS_LONG - STEPS_SHORT))
    # each term's share of the counted operations, per megapixel (squared)
    per_operation = per_pass / (count.linear + count.quadratic)
    megapixels = side * side / 1e6
    return Rate(linear=per_operation * count.linear / megapixels,
                quadratic=per_operation * count.quadratic / megapixels**2)
