"""Outputs tab: every saved image, newest first, searchable and paged; click one to read its
parameters, send it to Text to image or regenerate it. Also the `/history` API.

The gallery's files are kept on the server (a gr.State of names relative to the outputs
folder); a click sends back only the item's index, and the file is resolved inside the
outputs folder through the backend's file gate. A browser therefore never names a path the
server opens.
"""

from __future__ import annotations

import math
from typing import Any

import gradio as gr

from .common import PRIVATE, user_errors
from .pnginfo import SavedImageActions

PAGE_SIZE = 48
CAPTION_CHARS = 60
HISTORY_QUEUE = "history"  # its own concurrency group: never waits behind the GPU queue
HISTORY_LIMIT = {"concurrency_id": HISTORY_QUEUE, "concurrency_limit": 2}


def caption(item: dict[str, Any]) -> str:
    """A gallery caption: the start of the prompt, then task and seed."""
    prompt = item["prompt"] if len(item["prompt"]) <= CAPTION_CHARS else (
        item["prompt"][:CAPTION_CHARS - 1] + "…")
    return f"{prompt} ({item['task']}, seed {item['seed']})"


def page_view(studio: Any, query: str | None, page: Any
              ) -> tuple[list[tuple[str, str]], list[str], str, int]:
    """Page `page` (0-based, clamped to the pages there are) of the items matching `query`:
    (gallery items, their names relative to the outputs folder, a page label, the page)."""
    query = query or ""
    total, page, items = studio.history_listing(query, PAGE_SIZE, int(page or 0))
    pages = max(1, math.ceil(total / PAGE_SIZE))
    shown, names = [], []
    for item in items:
        try:
            path = studio.history_file(item["file"])
        except Exception:  # noqa: BLE001 - deleted since the index was read: leave it out
            continue
        shown.append((str(path), caption(item)))
        names.append(item["file"])
    if not total:
        label = f"No saved image matches “{query}”." if query.strip() else "No saved images yet."
    else:
        label = f"Page {page + 1} of {pages} · {total} image{'s' if total != 1 else ''}"
    return shown, names, label, page


def selected_item(studio: Any, names: list[str], index: Any) -> tuple[str, str, str]:
    """The clicked item, by its index in this page's names (held on the server):
    (its file for the image, its parameters text, its file for the actions)."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(names):
        raise gr.Error("That item is no longer on this page; press Refresh.")
    path = str(studio.history_file(names[index]))
    return path, studio.png_info(path), path


def build(studio: Any, gallery_hook: Any, tab: gr.Tab) -> Any:
    """Build the tab (opening `tab` refreshes it) and the `/history` API; returns
    `follow(event)`, which refreshes the list after `event` (each generation)."""
    actions = SavedImageActions(studio, gallery_hook, prefix="outputs")
    with gr.Row():
        search = gr.Textbox(label="Search prompt, task or model", max_length=200, scale=4,
                            elem_id="outputs-search", placeholder="red circle")
        refresh = gr.Button("Refresh", scale=1, elem_id="outputs-refresh")
    with gr.Row():
        prev = gr.Button("◀ Newer", elem_id="outputs-prev")
        label = gr.Markdown(elem_id="outputs-page")
        nxt = gr.Button("Older ▶", elem_id="outputs-next")
    # whole thumbnails, 8 a row whatever their number (fit_columns would stretch two
    # images over the width and crop them)
    gallery = gr.Gallery(label="Saved images", columns=8, height=420, allow_preview=False,
                         object_fit="contain", fit_columns=False, interactive=False,
                         elem_id="outputs-gallery")
    selected = gr.State(None)
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Selected", type="filepath", interactive=False,
                             elem_id="outputs-image")
            actions.buttons(selected)
        with gr.Column():
            params = gr.Textbox(label="Parameters", lines=14, elem_id="outputs-params")
            actions.results()
    page, names = gr.State(0), gr.State([])

    view = [gallery, names, label, page]
    # a new search starts at the first page; the others move from the current one
    for event, step in ((search.submit, None), (refresh.click, 0), (tab.select, 0),
                        (prev.click, -1), (nxt.click, 1)):
        event(_mover(studio, step), [search, page], view, **PRIVATE, **HISTORY_LIMIT)

    def pick(listed: list[str], evt: gr.SelectData) -> tuple[str, str, str]:
        return selected_item(studio, listed, evt.index)

    gallery.select(user_errors(pick), names, [image, params, selected], **PRIVATE)
    def follow(event: Any) -> None:
        event.then(_mover(studio, 0), [search, page], view, **PRIVATE, **HISTORY_LIMIT)

    follow(actions.wire(selected))  # a regenerated image joins the list
    _history_api(studio)
    return follow


def _mover(studio: Any, step: int | None) -> Any:
    """A handler (query, page) -> page_view of page + `step` (None: the first page)."""

    @user_errors
    def move(query: str | None, at: Any) -> tuple[list[tuple[str, str]], list[str], str, int]:
        return page_view(studio, query, 0 if step is None else int(at or 0) + step)

    return move


def _history_api(studio: Any) -> None:
    def history(limit: int = 50, query: str = "", offset: int = 0) -> list[dict[str, Any]]:
        """Saved images, newest first: [{file, task, prompt, seed, model, created}], `file`
        relative to the outputs folder. `query` matches prompt, task and model (any case);
        `limit` 1..500 from `offset`."""
        return studio.history(limit, query, offset)

    # queued in its own small group: bounded work, and never behind a generation
    gr.api(user_errors(history), api_name="history", **HISTORY_LIMIT)
