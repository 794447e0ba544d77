"""Assemble the studio's Blocks: banner, one tab per task, session gallery, PNG info,
Outputs, queue.

The tabs come from the backend's task table (`studio.backend.tasks.TABS`): each is the
module of that name in `studio.ui`, with `build(studio, gallery_hook)`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import gradio as gr

from studio.backend.files import allow_root
from studio.backend.history import INDEX_DIR
from studio.backend.tasks import SAVED_IMAGE_TABS, TABS
from studio.settings import Settings

from . import outputs, pnginfo
from .common import PRIVATE, model_picker, session_of, set_gpu_jobs
from .file_guard import install_file_guard
from .queue_guard import install_queue_guard
from .sendto import SendTo, send_to

TITLE = "Controllable Studio"
DESCRIPTION = (
    "Steer Stable Diffusion with a prompt, a sketch, a pose, a depth map, boxes, a mask, an "
    "instruction or a few pictures of a concept. Every tab is also a named API endpoint."
)


def gallery_hook_for(results: gr.State, gallery: gr.Gallery,
                     events: list[Any] | None = None) -> Any:
    """After a generation, add its image to this session's gallery (UI only); the
    generating events are collected in `events` (the Outputs list follows them)."""

    def add(history: list[str], path: str | None) -> tuple[list[str], list[str]]:
        history = ([path] if path else []) + list(history)
        return history, history

    def hook(event: Any, image: gr.Image) -> None:
        if events is not None:
            events.append(event)
        event.then(add, [results, image], [results, gallery], api_visibility="private")

    return hook


def _gallery_pick(results: gr.State, gallery: gr.Gallery) -> gr.State:
    """The session gallery item last clicked, as its file (held on the server: the click
    sends only the index)."""
    picked = gr.State(None)

    def pick(history: list[str], evt: gr.SelectData) -> str | None:
        index = evt.index
        return history[index] if isinstance(index, int) and 0 <= index < len(history) else None

    gallery.select(pick, results, picked, **PRIVATE)
    return picked


def launch_options(settings: Settings, studio: Any = None, **overrides: Any) -> dict[str, Any]:
    """`demo.launch` arguments from the settings: where to listen, login, upload size, the
    one folder gradio may serve files from besides its own cache (the outputs), less the
    history index inside it (every prompt: not for download), the request limits, and, with
    `studio`, the A1111-compatible API's routes (unless `--no-a1111-api`)."""
    outputs_dir = Path(settings.outputs_dir).resolve()
    options = {
        "server_name": settings.host, "server_port": settings.port, "share": settings.share,
        "auth": settings.auth_pair,
        "allowed_paths": [str(outputs_dir)],
        "blocked_paths": [str(outputs_dir / INDEX_DIR)],
        # gradio's one limit for every uploaded file: a model file's; images are held to
        # --max-file-mb by the file guard
        "max_file_size": int(max(settings.max_file_mb, settings.max_model_mb) * 1024 * 1024),
        "app_kwargs": app_kwargs(settings, studio),
    }
    return {**options, **overrides}


def _model_picker(studio: Any) -> gr.Dropdown:
    """The page's model picker: every checkpoint of the catalog, by name and family. Its
    value belongs to the browser session; the tabs send it with each job."""
    from studio.backend.models.families import get_family

    def choices() -> list[tuple[str, str]]:
        return [(f"{m['name']} ({get_family(m['family']).label})", m["name"])
                for m in studio.models()]

    with gr.Row():
        # custom values pass: the backend checks a name and says what was wrong (an API
        # client's "" means the default; a model added since the page loaded is valid)
        picker = gr.Dropdown(choices(), value=studio.catalog.default, label="Model",
                             elem_id="model-picker", scale=4, allow_custom_value=True,
                             info="Hub cache, --models-dir files and the built-in sets")
        refresh = gr.Button("Rescan models", elem_id="model-refresh", scale=1)
    refresh.click(lambda: (studio.models(refresh=True), gr.update(choices=choices()))[1],
                  None, picker, queue=False, **PRIVATE)
    return picker


def _notes(studio: Any, tab: str, model: str) -> str:
    """A tab's notes for checkpoint `model`: why its family cannot do some of the tab's
    tasks (the tasks refuse with the same words)."""
    try:
        family = studio.catalog.entry(model).family
    except ValueError:  # an unknown name: the job itself will say so
        return ""
    return "\n\n".join(f"> **{n}**" for n in studio.family_notes(tab, family))


def after_launch(demo: Any, settings: Settings) -> None:
    """What must wrap the app once gradio has built it: cross-origin access for the
    --cors-allow-origins pages (outside gradio's own CORS layer; see studio.api.cors)."""
    from studio.api.cors import allow_origins

    allow_origins(demo.server_app, settings.cors_origins)


def app_kwargs(settings: Settings, studio: Any = None) -> dict[str, Any]:
    """The FastAPI app's arguments: the request limits' middleware and the A1111 routes."""
    from starlette.middleware import Middleware

    from studio.api.a1111 import ROUTE_PREFIXES
    from studio.api.limits import RequestLimits, route_limits

    default, routes = route_limits(settings.max_file_mb, ROUTE_PREFIXES,
                                   settings.max_model_mb)
    limits: dict[str, Any] = {"default": default, "routes": routes}
    kwargs: dict[str, Any] = {}
    if studio is not None and settings.a1111_api:
        from studio.api.a1111 import A1111Api

        api = A1111Api(studio, settings)
        kwargs["routes"] = api.routes()
        limits.update(guarded=ROUTE_PREFIXES, access=api.access_refusal)
    kwargs["middleware"] = [Middleware(RequestLimits, **limits)]
    return kwargs


SMALL_SIDE = 256  # models drawing below this show their images enlarged, pixel for pixel
# Enlarge small results, gallery items and previews on the page only (nearest neighbour:
# crisp pixels, not blur); the saved files and API results keep their true size.
ENLARGED_CSS = """
[id$="-result"] img, [id$="-source"] img, #outputs-image img, #session-gallery img,
#outputs-gallery img {
    image-rendering: pixelated;
}
[id$="-result"] img, [id$="-source"] img, #outputs-image img {
    object-fit: contain !important; width: 100% !important; height: 100% !important;
    min-height: 256px;
}
"""


def page_style(studio: Any) -> dict[str, Any]:
    """`demo.launch` arguments for the page's look: small native sizes (the toy world's
    64 px) are shown enlarged instead of as postage stamps."""
    return {"css": ENLARGED_CSS} if studio.native_size < SMALL_SIDE else {}


def build_app(studio: Any, queue_size: int = 64, max_jobs_per_session: int = 0) -> gr.Blocks:
    """Build the whole UI around one shared backend `studio`.

    `max_jobs_per_session` (0 = no limit) bounds the jobs one browser session or API client
    may have waiting or running at once.
    """
    set_gpu_jobs(getattr(studio, "concurrency", 1))  # one job per device (Ray: per replica)
    with gr.Blocks(title=TITLE, delete_cache=(3600, 86400)) as demo:
        gr.Markdown(f"# {TITLE}\n{DESCRIPTION}")
        if studio.exposure_warning:
            gr.Markdown(f"> ⚠️ **{studio.exposure_warning}**", elem_id="exposure-banner")
        if studio.banner:
            gr.Markdown(f"> **{studio.banner}**", elem_id="offline-banner")
        picker = _model_picker(studio)
        results = gr.State([])
        gallery = gr.Gallery(
            label="This session's results", columns=8, height=200, fit_columns=False,
            object_fit="contain", preview=False, render=False, elem_id="session-gallery",
        )
        generations: list[Any] = []
        hook = gallery_hook_for(results, gallery, generations)
        notes: dict[str, gr.Markdown] = {}
        sending = SendTo(studio)
        with gr.Tabs() as tabs, model_picker(picker), send_to(sending):
            for name, title in TABS.items():
                with gr.Tab(title, id=name):
                    # what the chosen model's family cannot do on this tab
                    notes[name] = gr.Markdown(_notes(studio, name, studio.catalog.default),
                                              elem_classes="family-note",
                                              elem_id=f"{name}-family-note")
                    module = importlib.import_module(f"{__package__}.{name}")
                    module.build(studio, hook)
            with gr.Tab(SAVED_IMAGE_TABS["pnginfo"], id="pnginfo"):
                pnginfo.build(studio, hook)
            with gr.Tab(SAVED_IMAGE_TABS["outputs"], id="outputs") as outputs_tab:
                follow = outputs.build(studio, hook, outputs_tab)
        for event in generations:  # the Outputs list shows each new image
            follow(event)
        gallery.render()
        sending.source(_gallery_pick(results, gallery), "session")
        sending.wire(tabs)

        def cancel(request: gr.Request) -> bool:
            """Stop this session's running generation at its next step (frees the worker),
            and the jobs it still has waiting in the queue."""
            return studio.cancel(session_of(request))

        # Not queued: it must run while the GPU queue is busy with the run it stops.
        gr.api(cancel, api_name="cancel", queue=False)

        def models() -> str:
            """The checkpoints every generating endpoint's `model` parameter may name, as
            JSON: [{"name", "family", "source"}] (source: builtin, hub or file), the default
            first."""
            return json.dumps(studio.models())

        gr.api(models, api_name="models", queue=False)
        picker.change(lambda name: [_notes(studio, tab, name) for tab in notes], picker,
                      list(notes.values()), queue=False, **PRIVATE)
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    settings = studio.settings
    install_queue_guard(demo, max_jobs_per_session, per_address=settings.public,
                        trusted_proxies=settings.trusted_proxies)
    install_file_guard(demo, int(settings.max_file_mb * 1024 * 1024))
    # uploads land in gradio's upload folder: the only client files the backend may open
    allow_root(demo.GRADIO_CACHE)
    return demo
