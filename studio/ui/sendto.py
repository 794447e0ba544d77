"""Send to: an image goes from any result to any tab without a download.

Tabs register *targets* (what their inputs do with a sent image: Control puts it in unit 1 or
the init image, Edit starts a new edit, Remix adds it to its pictures, Text to image takes the
parameters stored in it). Results, the session gallery, PNG info and Outputs register
*sources* (the component or server-side state that holds the image's file) with a "Send to"
picker and a button beside them. `SendTo.wire`, once every tab is built, connects every source
to every target. A tab never imports another: each talks to this module only.

The browser never names a path the server opens: a source's value is a file this server made
or that was uploaded to it (the file guard checks every file reference a browser sends back,
and gallery and Outputs items are held on the server and picked by index), and the handler
reopens it through the backend's file gate, which also says when the file is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .common import PRIVATE, user_errors
from .sending import Target, register_source, register_target, send_to

__all__ = ["SendTo", "Target", "added_file", "register_source", "register_target", "send_to",
           "stored_values"]

# Targets in the order the picker lists them (a tab that is not built is left out).
ORDER = ("Text to image", "Control (unit 1)", "Control (init image)", "Layout", "Edit",
         "Instruct", "Remix", "Upscale", "Concepts")


@dataclass
class Source:
    """Something holding an image file, with its picker and button."""

    value: Any
    picker: gr.Dropdown
    button: gr.Button


class SendTo:
    """The page's targets and sources (see the module doc)."""

    def __init__(self, studio: Any) -> None:
        self.studio = studio
        self.targets: dict[str, Target] = {}
        self.sources: list[Source] = []

    def target(self, target: Target) -> None:
        self.targets[target.label] = target

    def source(self, value: Any, prefix: str) -> Source:
        """The picker and button for the image in `value`, in the current layout."""
        with gr.Row(equal_height=True):
            picker = gr.Dropdown([], value=None, label="Send to", scale=3, min_width=160,
                                 elem_id=f"{prefix}-sendto", elem_classes="send-to")
            button = gr.Button("Send", size="sm", scale=1, min_width=60,
                               elem_id=f"{prefix}-send")
        source = Source(value, picker, button)
        self.sources.append(source)
        return source

    def labels(self) -> list[str]:
        return sorted(self.targets, key=lambda t: ORDER.index(t) if t in ORDER else len(ORDER))

    def wire(self, tabs: gr.Tabs) -> None:
        """Connect every source to every target (call once every tab is built)."""
        labels = self.labels()
        outputs = _unique(c for label in labels for c in self.targets[label].outputs)
        inputs = _unique(c for label in labels for c in self.targets[label].inputs)
        handler = user_errors(self._handler(labels, outputs, inputs))
        for source in self.sources:
            source.picker.choices = [(label, label) for label in labels]
            source.picker.value = labels[0] if labels else None
            # no spinner on every widget a send might fill: only one target gets values
            source.button.click(handler, [source.picker, source.value, *inputs],
                                [*outputs, tabs], show_progress="hidden", **PRIVATE)

    def _handler(self, labels: list[str], outputs: list[Any], inputs: list[Any]
                 ) -> Callable[..., list[Any]]:
        studio, targets = self.studio, self.targets
        slot = {id(c): i for i, c in enumerate(outputs)}
        place = {id(c): i for i, c in enumerate(inputs)}

        def send(label: str | None, value: Any, *current: Any) -> list[Any]:
            if label not in targets:
                raise gr.Error(f"Pick where to send the image: one of {', '.join(labels)}.")
            if value is None or value == "":
                raise gr.Error("There is no image to send yet: generate one or pick one first.")
            path = str(studio.sent_image(value))  # the file gate: made here or uploaded
            target = targets[label]
            values = target.fn(path, *(current[place[id(c)]] for c in target.inputs))
            out: list[Any] = [gr.skip()] * len(outputs)
            for component, v in zip(target.outputs, values, strict=True):
                out[slot[id(component)]] = v
            return [*out, gr.Tabs(selected=target.tab)]

        return send


def _unique(components: Any) -> list[Any]:
    seen: dict[int, Any] = {}
    for c in components:
        seen.setdefault(id(c), c)
    return list(seen.values())


def stored_values(studio: Any, path: str, names: Sequence[str]) -> list[Any]:
    """The request stored in a saved image, for the widgets `names` (gr.skip() for those it
    does not set): what "Send to Text to image" fills in."""
    request = studio.png_request(path)
    if request is None:
        raise gr.Error("This image carries no studio parameters to send to Text to image; "
                       "send it to a tab that takes a picture instead.")
    return [request[name] if name in request else gr.skip() for name in names]


def added_file(path: str, current: Any, most: int) -> list[str]:
    """A gr.File list with `path` added (the oldest dropped past `most`)."""
    items = current if isinstance(current, list) else ([current] if current else [])
    paths = [i.get("path") if isinstance(i, dict) else getattr(i, "name", i) for i in items]
    return [*[p for p in paths if p], path][-most:]
