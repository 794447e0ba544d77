"""PNG info tab: read a saved image's parameters, send it (or them) to a tab, or regenerate
it.

`SavedImageActions` (Send to, Regenerate and the result) is shared with the Outputs tab, so
both read, send and regenerate a saved image through the same code.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from .common import PRIVATE, GenerationTab, user_errors
from .sendto import register_source


class SavedImageActions:
    """"Send to" and Regenerate (with Stop and the result) for one saved image.

    The image's path comes from `source` (a component or a gr.State); every read goes
    through the backend's file gate (`studio.sent_image`, `studio.regenerate`).
    """

    def __init__(self, studio: Any, gallery_hook: Any, prefix: str) -> None:
        self.studio, self.prefix = studio, prefix
        self.tab = GenerationTab(studio, "regenerate", gallery_hook, prefix=prefix)

    def buttons(self, source: Any) -> None:
        """Send to (the image in `source`) and Regenerate/Stop, in the current layout."""
        register_source(source, self.prefix)
        self.regen, _ = self.tab.buttons("Regenerate", elem="regenerate")

    def results(self) -> None:
        """The regenerated `[image, info]`, in the current layout context."""
        self.tab.results()

    def wire(self, source: Any) -> Any:
        """Wire Regenerate to the image in `source`; returns its event."""
        studio = self.studio
        return self.tab.wire(
            self.regen.click, {"image": source},
            run=lambda data, progress, cancel, preview: studio.regenerate(
                data["image"], progress, cancel, preview),
            doc="Re-run the exact stored request (bit-identical on the same kind of device).")


def build(studio: Any, gallery_hook: Any) -> None:
    """Build the tab."""
    actions = SavedImageActions(studio, gallery_hook, prefix="pnginfo")
    with gr.Row():
        with gr.Column():
            dropped = gr.Image(label="Drop a generated image", type="filepath",
                               elem_id="pnginfo-image")
            actions.buttons(dropped)
        with gr.Column():
            params = gr.Textbox(label="Parameters", lines=14, elem_id="pnginfo-params")
            actions.results()

    dropped.change(user_errors(studio.png_info), dropped, params, **PRIVATE)
    actions.wire(dropped)
