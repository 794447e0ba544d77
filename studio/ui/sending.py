"""Where tabs declare what "Send to" may do with their inputs and results (the registry
itself, `sendto.SendTo`, is active while `build_app` builds the tabs). Apart from
`sendto`, so that `common` can register every result without an import cycle."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

_ACTIVE: contextvars.ContextVar[Any] = contextvars.ContextVar("send_to", default=None)


@dataclass
class Target:
    """Where an image can go: tab `tab`'s `outputs` get `fn(path, *current values of
    inputs)` (one value per output)."""

    label: str
    tab: str
    outputs: list[Any]
    fn: Callable[..., Sequence[Any]]
    inputs: list[Any] = field(default_factory=list)


@contextlib.contextmanager
def send_to(registry: Any) -> Iterator[Any]:
    """Tabs built inside this block register their targets and sources with `registry`
    (a `sendto.SendTo`)."""
    token = _ACTIVE.set(registry)
    try:
        yield registry
    finally:
        _ACTIVE.reset(token)


def register_target(label: str, tab: str, outputs: Sequence[Any],
                    fn: Callable[..., Sequence[Any]], inputs: Sequence[Any] = ()) -> None:
    """Declare a target of the page being built (nothing outside `send_to`)."""
    registry = _ACTIVE.get()
    if registry is not None:
        registry.target(Target(label, tab, list(outputs), fn, list(inputs)))


def register_source(value: Any, prefix: str) -> None:
    """Put a "Send to" picker for the image in `value` here (nothing outside `send_to`)."""
    registry = _ACTIVE.get()
    if registry is not None:
        registry.source(value, prefix)


