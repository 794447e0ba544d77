"""Serve a Studio's full UI on a free local port for one test module (gradio's own test
pattern, launched with the options launch.py uses)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def serving(studio: Any, **launch: Any) -> Iterator[str]:
    """The URL of `studio`'s app while the block runs; `launch` adds launch() arguments
    (e.g. `page_style(studio)`)."""
    from studio.ui.app import build_app, launch_options

    demo = build_app(studio)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch,
                            **launch_options(studio.settings, studio, server_port=None))
    try:
        yield url
    finally:
        demo.close()
