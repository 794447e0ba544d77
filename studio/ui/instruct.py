"""Instruct tab: edit an image by saying what to change (InstructPix2Pix), over several turns.

History (per session, `gr.State`) is linear, version 0 = the uploaded original. The left
image is what **Edit** starts from; **Edit the result again** continues from the current
version (the last result, or the one clicked in the history strip). Editing from an earlier
version drops the versions after it (they stay in the session gallery and the outputs
folder); the status line says so before you press a button.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from studio.backend.models.schedulers import DEFAULT_SCHEDULER, USER_SCHEDULERS
from studio.backend.tasks.instruct import DEFAULT_MAX_SIDE, MAX_IMAGE_GUIDANCE, EditHistory

from .common import PRIVATE, GenerationTab, labelled_input_errors, path_and_info, stop_handler
from .sendto import register_target

HAS_SLIDER = hasattr(gr, "ImageSlider")
# API parameter -> request field
RENAME = {"instruction": "prompt", "text_guidance": "guidance_scale",
          "image_guidance": "image_guidance_scale"}


def _span(first: int, last: int) -> str:
    return f"v{first}" if first == last else f"v{first}-v{last}"


def _status(hist: EditHistory, base: int | None) -> str:
    """One line saying where each button starts from and what it would drop."""
    if not len(hist):
        return "Upload an image, type an instruction and press **Edit**."
    last = len(hist) - 1
    cur = hist.current
    text = f"Showing **v{cur}** (history {_span(0, last)}). "
    if base is not None:
        text += f"**Edit** starts from v{base} (left image)"
        text += f" and drops {_span(base + 1, last)}. " if base < last else ". "
    text += f"**Edit the result again** continues from v{cur}"
    text += f" and drops {_span(cur + 1, last)}." if cur < last else "."
    return text


def _views(hist: EditHistory, base: int | None) -> tuple[Any, ...]:
    """Values for (history state, base state, strip, before/after..., status)."""
    if not len(hist):
        before_after: tuple[Any, ...] = (None,) if HAS_SLIDER else (None, None)
        return (hist, base, [], *before_after, _status(hist, base))
    labels = [("▶ " if i == hist.current else "") + label
              for i, label in enumerate(hist.labels())]
    strip = list(zip([v.path for v in hist.versions], labels, strict=True))
    after = hist.current_path
    before = hist.parent_path or after
    before_after = ((before, after),) if HAS_SLIDER else (before, after)
    return (hist, base, strip, *before_after, _status(hist, base))


# Every function below takes the session's history from a gr.State, held on the server: the
# file paths in it never travel through the browser and back.
def record_edit(hist: EditHistory, base: int | None, image: str | None, result: str | None,
                text: str) -> tuple[Any, ...]:
    """After Edit: the result becomes a new version edited from the left image."""
    if not len(hist) or base is None:
        hist, base = EditHistory.start(image or ""), 0
    hist.select(base)
    hist.push(result or "", text)
    return _views(hist, base)


def record_again(hist: EditHistory, result: str | None, text: str) -> tuple[Any, ...]:
    """After Edit again: the left image becomes the version that was edited."""
    parent = hist.current
    hist.push(result or "", text)
    return (*_views(hist, parent), hist.versions[parent].path)


def again_request(data: dict[str, Any]) -> dict[str, Any]:
    """Edit again: the request starts from the history's current version."""
    hist = data.pop("history")
    if not len(hist):
        raise gr.Error("Nothing to edit again yet: upload an image and press Edit first.")
    return {**data, "image": hist.current_path}


def select_version(hist: EditHistory, evt: gr.SelectData) -> tuple[Any, ...]:
    """Clicking version k makes it current and puts it in the left box (Edit branches)."""
    if not len(hist):
        return (*_views(hist, None), gr.skip())
    hist.select(int(evt.index))
    return (*_views(hist, hist.current), hist.current_path)


def build(studio: Any, gallery_hook: Any) -> None:
    """Build the tab inside the current Blocks context."""
    tab = GenerationTab(studio, "instruct", gallery_hook, prefix="instruct")
    history, base, last = gr.State(EditHistory()), gr.State(None), gr.State(None)
    with gr.Row():
        with gr.Column(scale=1):
            image, params, run, again = _edit_widgets(tab)
        with gr.Column(scale=1):
            views, status, strip = _history_widgets()
            with gr.Accordion("Result file", open=False):
                tab.results()
    view_outputs = [history, base, strip, *views, status]
    result_path = {"outputs": lambda r: (*path_and_info(r), str(r.path)),
                   "extra_outputs": [last], "rename": RENAME}
    event = tab.wire(run.click, {"image": image, **params}, api_name="instruct",
                     doc="Edit `image` as the instruction says. Returns [image, info JSON "
                         "with seed and file].", **result_path)
    event.success(record_edit, [history, base, image, last, params["instruction"]],
                  view_outputs, **PRIVATE)
    event2 = tab.wire(again.click, {"history": history, **params}, to_request=again_request,
                      doc="Edit the current version of this session's history.",
                      **result_path)
    event2.success(record_again, [history, last, params["instruction"]],
                   [*view_outputs, image], **PRIVATE)
    image.upload(lambda p: _views(EditHistory.start(p), 0) if p else _views(EditHistory(), None),
                 image, view_outputs, **PRIVATE)
    image.clear(lambda: _views(EditHistory(), None), None, view_outputs, **PRIVATE)
    register_target("Instruct", "instruct", [image, *view_outputs],
                    lambda path: [path, *_views(EditHistory.start(path), 0)])
    strip.select(select_version, history, [*view_outputs, image], **PRIVATE)


def _edit_widgets(tab: GenerationTab) -> tuple[Any, dict[str, Any], Any, Any]:
    """The input image, the instruction and its settings (API names), Edit / Edit again."""
    image = gr.Image(label="Image to edit (Edit starts from this)", type="filepath",
                     image_mode=None, sources=["upload", "clipboard"])
    p: dict[str, Any] = {}
    p["instruction"] = gr.Textbox(label="Instruction", lines=2, value="",
                                  placeholder="make it winter / turn the cat into a fox")
    tools = gr.Checkbox(
        label="Tools", value=True,
        info="'mark (highlight, outline) <what> in <colour>' is answered by a mask from the "
             "words and a coloured overlay, without the model.")
    with gr.Row():
        p["text_guidance"] = gr.Slider(
            0, 30, value=7.5, step=0.5, label="Text guidance",
            info="How strongly to follow the instruction (higher = bigger change).")
        p["image_guidance"] = gr.Slider(
            1, MAX_IMAGE_GUIDANCE, value=1.5, step=0.1, label="Image guidance",
            info="How closely to stay to the input image (higher = fewer changes).")
    with gr.Row():
        run = gr.Button("Edit", variant="primary")
        again = gr.Button("Edit the result again")
        stop = gr.Button("Stop")
    stop.click(stop_handler(tab.studio), None, None, queue=False, **PRIVATE)
    with gr.Accordion("Generation settings", open=False):
        p["negative_prompt"] = gr.Textbox(label="Negative prompt", lines=1, value="")
        with gr.Row():
            p["seed"] = gr.Number(label="Seed (-1 = random)", value=-1, precision=0)
            p["steps"] = gr.Slider(1, 150, value=20, step=1, label="Steps")
        with gr.Row():
            p["scheduler"] = gr.Dropdown(list(USER_SCHEDULERS), value=DEFAULT_SCHEDULER,
                                         label="Sampler")
            p["fast"] = gr.Checkbox(label="Fast mode (LCM-LoRA, 4 steps)", value=False,
                                    info="Guidance 1, so both guidance sliders are ignored.")
        p["max_side"] = gr.Slider(
            64, 2048, value=min(DEFAULT_MAX_SIDE, tab.studio.native_size), step=8,
            label="Max side",
            info="Longest side of the output; aspect ratio kept, sides rounded to multiples "
                 "of 8, small images never upscaled.")
    p["tools"] = tools  # last: a trailing API parameter, so older callers are unaffected
    for component in (image, p["text_guidance"], p["image_guidance"], p["steps"],
                      p["max_side"]):
        labelled_input_errors(component)
    return image, p, run, again


def _history_widgets() -> tuple[list[Any], Any, Any]:
    if HAS_SLIDER:
        views: list[Any] = [gr.ImageSlider(label="Before / after", type="filepath",
                                           interactive=False)]
    else:
        with gr.Row():
            views = [gr.Image(label="Before", type="filepath", interactive=False),
                     gr.Image(label="After", type="filepath", interactive=False)]
    status = gr.Markdown(_status(EditHistory(), None))
    strip = gr.Gallery(label="Edit history (click a version to go back to it)",
                       columns=6, height=170, allow_preview=False, format="png")
    return views, status, strip
