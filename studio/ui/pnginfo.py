"""PNG info tab: read a saved image's parameters, send them to a tab, or regenerate it.

`SavedImageActions` (Send to Text to image, Regenerate and the result) is shared with the
Outputs tab, so both read, send and regenerate a saved image through the same code.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from .common import PRIVATE, GenerationTab, user_errors


def send_values(studio: Any, path: str | None, names: list[str]) -> list[Any]:
    """The stored request's values for the widgets `names` (gr.skip() for the others)."""
    request = studio.png_request(path)
    if request is None:
        raise gr.Error("This image carries no studio parameters to send.")
    return [request[name] if name in request else gr.skip() for name in names]


class SavedImageActions:
    """"Send to Text to image" and Regenerate (with Stop and the result) for one saved image.

    The image's path comes from `source` (a component or a gr.State); every read goes
    through the backend's file gate (`studio.png_request`, `studio.regenerate`).
    """

    def __init__(self, studio: Any, gallery_hook: Any, prefix: str) -> None:
        self.studio, self.prefix = studio, prefix
        self.tab = GenerationTab(studio, "regenerate", gallery_hook, prefix=prefix)

    def buttons(self) -> None:
        """Send and Regenerate/Stop, in the current layout context."""
        with gr.Row():
            self.send = gr.Button("Send to Text to image", elem_id=f"{self.prefix}-send")
        self.regen, _ = self.tab.buttons("Regenerate", elem="regenerate")

    def results(self) -> None:
        """The regenerated `[image, info]`, in the current layout context."""
        self.tab.results()

    def wire(self, source: Any, tabs: gr.Tabs, txt2img_params: dict[str, Any]) -> Any:
        """Wire both buttons to the image in `source`; returns the Regenerate event."""
        studio = self.studio

        def send_to_txt2img(path: str | None) -> list[Any]:
            """Fill the text-to-image fields from the stored request and switch to that tab."""
            return [*send_values(studio, path, list(txt2img_params)),
                    gr.Tabs(selected="txt2img")]

        self.send.click(user_errors(send_to_txt2img), source,
                        [*txt2img_params.values(), tabs], **PRIVATE)
        return self.tab.wire(
            self.regen.click, {"image": source},
            run=lambda data, progress, cancel, preview: studio.regenerate(
                data["image"], progress, cancel, preview),
            doc="Re-run the exact stored request (bit-identical on the same kind of device).")


def build(studio: Any, gallery_hook: Any, tabs: gr.Tabs, txt2img_params: dict[str, Any]) -> None:
    """Build the tab; `txt2img_params` are the text-to-image widgets keyed by parameter name."""
    actions = SavedImageActions(studio, gallery_hook, prefix="pnginfo")
    with gr.Row():
        with gr.Column():
            dropped = gr.Image(label="Drop a generated image", type="filepath",
                               elem_id="pnginfo-image")
            actions.buttons()
        with gr.Column():
            params = gr.Textbox(label="Parameters", lines=14, elem_id="pnginfo-params")
            actions.results()

    dropped.change(user_errors(studio.png_info), dropped, params, **PRIVATE)
    actions.wire(dropped, tabs, txt2img_params)
