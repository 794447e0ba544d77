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
    from studio.ui.app import after_launch, build_app, launch_options

    demo = build_app(studio)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch,
                            **launch_options(studio.settings, studio, server_port=None))
    after_launch(demo, studio.settings)
    try:
        yield url
    finally:
        demo.close()


def launch_local(studio: Any, max_jobs_per_session: int = 0) -> tuple[Any, str]:
    """(demo, URL): `studio`'s app launched on the loopback address whatever its settings'
    host (a "public" studio in a test listens locally all the same); close the demo after."""
    from studio.ui.app import after_launch, build_app, launch_options

    demo = build_app(studio, max_jobs_per_session=max_jobs_per_session)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True,
                            **launch_options(studio.settings, studio, server_port=None,
                                             server_name="127.0.0.1"))
    after_launch(demo, studio.settings)
    return demo, url
