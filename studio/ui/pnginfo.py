"""PNG info tab: read a saved image's parameters, send them to a tab, or regenerate it."""

from __future__ import annotations

from typing import Any

import gradio as gr

from .common import PRIVATE, gpu_kwargs, info_json, result_outputs, spaces_gpu, user_errors


def build(studio: Any, gallery_hook: Any, tabs: gr.Tabs, txt2img_params: dict[str, Any]) -> None:
    """Build the tab; `txt2img_params` are the text-to-image widgets keyed by parameter name."""
    with gr.Row():
        with gr.Column():
            dropped = gr.Image(label="Drop a generated image", type="filepath",
                               elem_id="pnginfo-image")
            with gr.Row():
                send = gr.Button("Send to Text to image", elem_id="pnginfo-send")
                regen = gr.Button("Regenerate", variant="primary", elem_id="pnginfo-regenerate")
        with gr.Column():
            params = gr.Textbox(label="Parameters", lines=14, elem_id="pnginfo-params")
            image, info = result_outputs("pnginfo")

    dropped.change(studio.png_info, dropped, params, **PRIVATE)

    def send_to_txt2img(path: str | None) -> list[Any]:
        """Fill the text-to-image fields from the stored request and switch to that tab."""
        request = studio.png_request(path)
        if request is None:
            raise gr.Error("This image carries no studio parameters to send.")
        values = [request[name] if name in request else gr.skip() for name in txt2img_params]
        return [*values, gr.Tabs(selected="txt2img")]

    send.click(user_errors(send_to_txt2img), dropped, [*txt2img_params.values(), tabs],
               **PRIVATE)

    @spaces_gpu
    @user_errors
    def regenerate(path: str | None) -> tuple[str, str]:
        """Re-run the exact stored request (bit-identical on the same kind of device)."""
        if studio.png_request(path) is None:
            raise gr.Error("This image carries no studio parameters to regenerate from.")
        result = studio.regenerate(path)
        return str(result.path), info_json(result.info)

    event = regen.click(regenerate, dropped, [image, info], **PRIVATE, **gpu_kwargs())
    gallery_hook(event, image)
