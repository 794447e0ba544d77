"""Start the studio: parse flags -> Settings -> backend -> UI -> launch.

    python launch.py                 # real SD1.5 if available, else built-in offline models
    python launch.py --models toy    # the trained toy world of coloured shapes (offline)
    python launch.py --models tiny   # random tiny models (fast, offline)
    python launch.py --help          # every flag
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def make_studio(settings: Any) -> Any:
    """The backend the flags ask for: this process (local) or Ray Serve replicas (ray)."""
    if settings.backend == "ray":
        try:
            import ray.serve  # noqa: F401 - only to say clearly that it is missing
        except ImportError as err:
            sys.exit(f"error: --backend ray needs Ray Serve: pip install 'ray[serve]' ({err})")
        from studio.backend.serve import RayStudio

        return RayStudio(settings)
    from studio.backend.service import Studio

    return Studio(settings)


def main(argv: list[str] | None = None) -> None:
    from studio.settings import settings_from_args

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = settings_from_args(argv)
    except ValueError as err:
        sys.exit(f"error: {err}")

    if settings.compile and os.environ.get("SPACES_ZERO_GPU"):
        # ZeroGPU lends a GPU per call only: a start-up warm-up has none to compile on, and
        # compiling inside a call would eat its short GPU window
        logging.getLogger("studio").warning("--compile is off on ZeroGPU (no GPU at start-up)")
        settings = replace(settings, compile=False)

    from studio.ui.app import after_launch, build_app, launch_options, page_style

    log = logging.getLogger("studio")
    try:
        studio = make_studio(settings)
    except FileNotFoundError as err:  # e.g. --models toy without assets/toy
        sys.exit(f"error: {err}")
    if studio.banner:
        log.warning(studio.banner)
    if studio.exposure_warning:
        log.warning("\n%s\n%s\n%s", "!" * 78, studio.exposure_warning, "!" * 78)
    if os.environ.get("SPACES_ZERO_GPU"):
        # ZeroGPU lends a GPU per call for a short window: load the weights now, outside it
        studio.preload()
    if settings.compile:
        # compile the UNet now, not in the first user's request (about a minute on a GPU)
        log.info("--compile: compiling the UNet in a warm-up run before the server starts")
        studio.warm_up()
    if settings.max_job_seconds and not os.environ.get("SPACES_ZERO_GPU"):
        # time the denoiser on the device jobs run on (ZeroGPU has none at start-up), so a
        # job that would outrun --max-job-seconds is refused before it runs
        studio.calibrate()
    demo = build_app(studio, queue_size=settings.queue_size,
                     max_jobs_per_session=settings.max_jobs_per_session)
    demo.launch(**launch_options(settings, studio), **page_style(studio),
                prevent_thread_lock=True)
    after_launch(demo, settings)
    demo.block_thread()


if __name__ == "__main__":
    main()
