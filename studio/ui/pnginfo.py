"""PNG info tab: read a saved image's parameters, send them to a tab, or regenerate it."""

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


def build(studio: Any, gallery_hook: Any, tabs: gr.Tabs, txt2img_params: dict[str, Any]) -> None:
    """Build the tab; `txt2img_params` are the text-to-image widgets keyed by parameter name."""
    tab = GenerationTab(studio, "regenerate", gallery_hook, prefix="pnginfo")
    with gr.Row():
        with gr.Column():
            dropped = gr.Image(label="Drop a generated image", type="filepath",
                               elem_id="pnginfo-image")
            with gr.Row():
                send = gr.Button("Send to Text to image", elem_id="pnginfo-send")
            regen, _ = tab.buttons("Regenerate", elem="regenerate")
        with gr.Column():
            params = gr.Textbox(label="Parameters", lines=14, elem_id="pnginfo-params")
            tab.results()

    dropped.change(user_errors(studio.png_info), dropped, params, **PRIVATE)

    def send_to_txt2img(path: str | None) -> list[Any]:
        """Fill the text-to-image fields from the stored request and switch to that tab."""
        return [*send_values(studio, path, list(txt2img_params)), gr.Tabs(selected="txt2img")]

    send.click(user_errors(send_to_txt2img), dropped, [*txt2img_params.values(), tabs],
               **PRIVATE)
    tab.wire(regen.click, {"image": dropped},
             run=lambda data, progress, cancel, preview: studio.regenerate(
                 data["image"], progress, cancel, preview),
             doc="Re-run the exact stored request (bit-identical on the same kind of device).")
