"""Deadlines and Stop that hold inside a denoising step, not only between steps.

The step callbacks check a job's cancel token once per step, but one step of a large image
can take minutes on a small machine (attention grows with the square of the pixels): a job
past its deadline held the worker until its step ended. So the registry hooks the blocks of
every denoiser, ControlNet and VAE it loads (`watch_blocks`: each attention, feed-forward
and ResNet block checks before it runs), and the job that holds the device makes its token
the one those hooks check (`watching`). A job then stops within one block of its deadline or
its Stop. Outside a job, or with no token, the hooks do nothing; compiled modules get none
(a hook would break the compiled graph).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

# Blocks checked before they run: they split a step into pieces of at most a few percent
# (every family's denoiser and VAE is built of them).
WATCHED_BLOCKS = ("Attention", "FeedForward", "ResnetBlock2D")

_current = threading.local()


@contextlib.contextmanager
def watching(token: Any) -> Iterator[None]:
    """Make `token` (a CancelToken or None) the one the block hooks check on this thread."""
    previous = getattr(_current, "token", None)
    _current.token = token
    try:
        yield
    finally:
        _current.token = previous


def check_current() -> None:
    """Raise the current job's Cancelled if it was stopped or ran past its deadline."""
    token = getattr(_current, "token", None)
    if token is not None and token.cancelled:
        token.check()


def _hook(module: Any, args: Any) -> None:
    check_current()


def watch_blocks(model: Any) -> int:
    """Hook every watched block of `model` (a torch module); returns how many."""
    count = 0
    for module in model.modules():
        if type(module).__name__ in WATCHED_BLOCKS:
            module.register_forward_pre_hook(_hook)
            count += 1
    return count
