"""Run a test package's small models on one torch thread.

The tiny and toy models are far too small to gain much from threads, and on a busy 2-core
runner (a browser, servers and the test process sharing the cores) torch's OpenMP threads spin
at every barrier waiting for a descheduled partner: measured 3-4x slower than one thread there
(SeedSelect's semantic test: 181 s alone, over 600 s in the full run). One thread is at most
~20% slower on an idle machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
