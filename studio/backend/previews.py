"""Live previews: decode the image while it forms, cheaply, and hand it to whoever watches.

A preview is the sampler's current estimate of the final image (its predicted x0 where the
scheduler reports one, else the current latents) decoded by TAESD (`AutoencoderTiny`, a
distilled VAE decoder about 100x cheaper than the real one), never the full VAE.

How often: not "every k steps" with a fixed k, because a step costs 20 ms on one machine and
2 s on another. A preview is decoded when at least `min_interval` seconds passed since the
last one *and* the time spent decoding previews stays within `max_share` (10%) of the job's
time so far; the k this gives is measured in bench/previews.py. The final image never comes
from here: it is the real VAE's decode, exactly as without previews.

The job's previewer is found by the step callbacks through a context variable (set by the
Studio for the job's thread), so no task runner has to pass it along; a job without one pays
nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from PIL import Image

log = logging.getLogger(__name__)

# At most 4 previews a second (A1111 refreshes its preview once a second by default): each
# one also costs the web server an encode and a message, outside the decoding budget below.
MIN_INTERVAL_S = 0.25
MAX_SHARE = 0.1  # previews take at most this share of the job's time
PreviewFn = Callable[[Image.Image, int, int], None]  # (image, step, total)

_active: contextvars.ContextVar[Previewer | None] = contextvars.ContextVar(
    "studio_previewer", default=None)


class Previewer:
    """Throttled TAESD previews of one job, handed to `emit(image, step, total)`."""

    def __init__(self, decoder: Callable[[], Any], emit: PreviewFn,
                 min_interval: float = MIN_INTERVAL_S, max_share: float = MAX_SHARE) -> None:
        self._decoder_factory = decoder  # loads TAESD on the first preview (None: no TAESD)
        self._decoder: Any = None
        self.emit = emit
        self.min_interval, self.max_share = min_interval, max_share
        self.started = time.monotonic()
        self.last = self.started
        self.spent = 0.0  # seconds spent decoding and handing over previews
        self.cost = 0.0  # the last preview's cost: what the next one is expected to take
        self.worst = 0.0  # the dearest preview (the budget may be overrun by one surprise)
        self.shown: list[int] = []  # the steps that got a preview
        self.x0: torch.Tensor | None = None  # the scheduler's latest predicted x0
        self.failed = False

    def watch(self, scheduler: Any) -> None:
        """Record the predicted x0 each `scheduler.step` returns (the scheduler is fresh per
        call, so wrapping its bound method touches no shared state)."""
        step = scheduler.step

        # wraps: pipelines read step's signature to decide whether to pass `generator` and
        # `eta` (without it, ancestral samplers would draw from the global RNG)
        @functools.wraps(step)
        def stepped(*args: Any, **kwargs: Any) -> Any:
            out = step(*args, **kwargs)
            if isinstance(out, tuple):
                self.x0 = out[1] if len(out) > 1 and torch.is_tensor(out[1]) else None
            else:
                self.x0 = (getattr(out, "pred_original_sample", None)
                           if getattr(out, "pred_original_sample", None) is not None
                           else getattr(out, "denoised", None))
            return out

        scheduler.step = stepped

    def due(self, step: int, total: int) -> bool:
        """Whether step `step` (1-based) of `total` gets a preview (never the last one: the
        final image follows at once)."""
        if self.failed or step >= total:
            return False
        now = time.monotonic()
        if now - self.last < self.min_interval:
            return False
        return self.spent + self.cost <= self.max_share * (now - self.started)

    def step(self, step: int, total: int, latents: Any) -> None:
        """Called by the step callbacks after each step with the current latents."""
        if not self.due(step, total):
            return
        t0 = time.monotonic()
        try:
            image = self.decode(self.x0 if _same_shape(self.x0, latents) else latents)
        except Exception:  # noqa: BLE001 - a preview must never fail the job
            log.exception("preview decoding failed; previews are off for this job")
            self.failed = True
            return
        if image is None:
            return
        self.emit(image, step, total)
        self.cost = time.monotonic() - t0
        self.worst = max(self.worst, self.cost)
        self.spent += self.cost
        self.last = time.monotonic()
        self.shown.append(step)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> Image.Image | None:
        """The last image of the batch (a prompt edit's batch ends with the edit) as RGB."""
        if self._decoder is None:
            self._decoder = self._decoder_factory()
            if self._decoder is None:
                self.failed = True
                return None
        taesd = self._decoder
        weight = next(taesd.parameters())
        z = latents[-1:].to(device=weight.device, dtype=weight.dtype)
        x = taesd.decode(z).sample[0].float().clamp(-1, 1)
        array = ((x + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(array)


def _same_shape(x0: Any, latents: Any) -> bool:
    return torch.is_tensor(x0) and torch.is_tensor(latents) and x0.shape == latents.shape


@contextlib.contextmanager
def previewing(previewer: Previewer | None) -> Iterator[Previewer | None]:
    """Make `previewer` the current job's for the callbacks run inside this block."""
    token = _active.set(previewer)
    try:
        yield previewer
    finally:
        _active.reset(token)


def show(step: int, total: int, latents: Any) -> None:
    """A step callback's hook: preview `latents` after step `step` of `total` if due."""
    previewer = _active.get()
    if previewer is not None and latents is not None:
        previewer.step(step, total, latents)


def watch_scheduler(scheduler: Any) -> None:
    """Let the current job's previewer see the predicted x0 of `scheduler` (if previewing)."""
    previewer = _active.get()
    if previewer is not None:
        previewer.watch(scheduler)
