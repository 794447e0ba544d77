"""Instruct tab: edit an image by saying what to change (InstructPix2Pix), over several turns.

History (per session, `gr.State`) is linear, version 0 = the uploaded original. The left
image is what **Edit** starts from; **Edit the result again** continues from the current
version (the last result, or the one clicked in the history strip). Editing from an earlier
version drops the versions after it (they stay in the session gallery and the outputs
folder); the status line says so before you press a button.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from studio.backend.models.schedulers import DEFAULT_SCHEDULER, USER_SCHEDULERS
from studio.backend.tasks.instruct import DEFAULT_MAX_SIDE, MAX_IMAGE_GUIDANCE, EditHistory

from .common import (
    gpu_kwargs,
    info_json,
    labelled_input_errors,
    progress_adapter,
    result_outputs,
    session_of,
    spaces_gpu,
    stop_handler,
    user_errors,
)
from .common import (
    whole_number as _num,
)

HAS_SLIDER = hasattr(gr, "ImageSlider")


def _request(image: Any, instruction: str, text_guidance: float, image_guidance: float,
             negative_prompt: str, seed: float, steps: float, scheduler: str, fast: bool,
             max_side: float) -> dict[str, Any]:
    return {
        "image": image, "prompt": instruction if instruction is not None else "",
        "guidance_scale": _num(text_guidance), "image_guidance_scale": _num(image_guidance),
        "negative_prompt": negative_prompt or "", "seed": _num(seed), "steps": _num(steps),
        "scheduler": scheduler, "fast": bool(fast), "max_side": _num(max_side),
    }


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
        return (hist.to_state(), base, [], *before_after, _status(hist, base))
    labels = [("▶ " if i == hist.current else "") + label
              for i, label in enumerate(hist.labels())]
    strip = list(zip([v.path for v in hist.versions], labels, strict=True))
    after = hist.current_path
    before = hist.parent_path or after
    before_after = ((before, after),) if HAS_SLIDER else (before, after)
    return (hist.to_state(), base, strip, *before_after, _status(hist, base))


def build(studio: Any, gallery_hook: Any) -> None:
    """Build the tab inside the current Blocks context."""
    history = gr.State({})  # EditHistory.to_state()
    base = gr.State(None)  # index of the version shown in the input box, None if unknown
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(label="Image to edit (Edit starts from this)", type="filepath",
                             image_mode=None, sources=["upload", "clipboard"])
            instruction = gr.Textbox(label="Instruction", lines=2, value="",
                                     placeholder="make it winter / turn the cat into a fox")
            with gr.Row():
                text_guidance = gr.Slider(
                    0, 30, value=7.5, step=0.5, label="Text guidance",
                    info="How strongly to follow the instruction (higher = bigger change).",
                )
                image_guidance = gr.Slider(
                    1, MAX_IMAGE_GUIDANCE, value=1.5, step=0.1, label="Image guidance",
                    info="How closely to stay to the input image (higher = fewer changes).",
                )
            with gr.Row():
                run = gr.Button("Edit", variant="primary")
                again = gr.Button("Edit the result again")
                stop = gr.Button("Stop")
            with gr.Accordion("Generation settings", open=False):
                negative_prompt = gr.Textbox(label="Negative prompt", lines=1, value="")
                with gr.Row():
                    seed = gr.Number(label="Seed (-1 = random)", value=-1, precision=0)
                    steps = gr.Slider(1, 150, value=20, step=1, label="Steps")
                max_side = gr.Slider(
                    64, 2048, value=min(DEFAULT_MAX_SIDE, studio.native_size), step=8,
                    label="Max side",
                    info="Longest side of the output; aspect ratio kept, sides rounded to "
                         "multiples of 8, small images never upscaled.",
                )
                with gr.Row():
                    scheduler = gr.Dropdown(list(USER_SCHEDULERS), value=DEFAULT_SCHEDULER,
                                            label="Sampler")
                    fast = gr.Checkbox(
                        label="Fast mode (LCM-LoRA, 4 steps)", value=False,
                        info="Guidance 1, so both guidance sliders are ignored.",
                    )
        with gr.Column(scale=1):
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
            with gr.Accordion("Result file", open=False):
                result, info = result_outputs()

    for component in (image, text_guidance, image_guidance, steps, max_side):
        labelled_input_errors(component)
    params = [instruction, text_guidance, image_guidance, negative_prompt, seed, steps,
              scheduler, fast, max_side]
    view_outputs = [history, base, strip, *views, status]

    def _run(image_value: Any, args: tuple[Any, ...], request: gr.Request | None,
             progress: Any) -> tuple[str, str]:
        session = session_of(request)
        res = studio.instruct(_request(image_value, *args),
                              progress=progress_adapter(progress),
                              cancel=studio.cancel_token(session))
        return str(res.path), info_json(res.info)

    @spaces_gpu
    @user_errors
    def instruct(
        image: str | None, instruction: str, text_guidance: float, image_guidance: float,
        negative_prompt: str, seed: float, steps: float, scheduler: str, fast: bool,
        max_side: float, request: gr.Request = None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),
    ) -> tuple[str, str]:
        """Edit `image` as the instruction says. Returns [image, info JSON with seed and file]."""
        return _run(image, (instruction, text_guidance, image_guidance, negative_prompt, seed,
                            steps, scheduler, fast, max_side), request, progress)

    @spaces_gpu
    @user_errors
    def instruct_again(
        state: dict, instruction: str, text_guidance: float, image_guidance: float,
        negative_prompt: str, seed: float, steps: float, scheduler: str, fast: bool,
        max_side: float, request: gr.Request = None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),
    ) -> tuple[str, str]:
        """Edit the current version of this session's history."""
        hist = EditHistory.from_state(state)
        if not len(hist):
            raise gr.Error("Nothing to edit again yet: upload an image and press Edit first.")
        return _run(hist.current_path, (instruction, text_guidance, image_guidance,
                                        negative_prompt, seed, steps, scheduler, fast,
                                        max_side), request, progress)

    def record_edit(state: dict, base_index: int | None, image_path: str | None,
                    info_text: str, text: str) -> tuple[Any, ...]:
        """After Edit: the result becomes a new version edited from the left image."""
        hist = EditHistory.from_state(state)
        if not len(hist) or base_index is None:
            hist, base_index = EditHistory.start(image_path or ""), 0
        hist.select(base_index)
        data = json.loads(info_text)
        hist.push(data["path"], text, data.get("seed"))
        return _views(hist, base_index)

    def record_again(state: dict, info_text: str, text: str) -> tuple[Any, ...]:
        """After Edit again: the left image becomes the version that was edited."""
        hist = EditHistory.from_state(state)
        parent = hist.current
        data = json.loads(info_text)
        hist.push(data["path"], text, data.get("seed"))
        return (*_views(hist, parent), hist.versions[parent].path)

    def on_upload(path: str | None) -> tuple[Any, ...]:
        """A new image starts a new history."""
        if not path:
            return _views(EditHistory(), None)
        return _views(EditHistory.start(path), 0)

    def on_select(state: dict, evt: gr.SelectData) -> tuple[Any, ...]:
        """Clicking version k makes it current and puts it in the left box (Edit branches)."""
        hist = EditHistory.from_state(state)
        if not len(hist):
            return (*_views(hist, None), gr.skip())
        hist.select(int(evt.index))
        return (*_views(hist, hist.current), hist.current_path)

    event = run.click(instruct, inputs=[image, *params], outputs=[result, info],
                      api_name="instruct", **gpu_kwargs())
    gallery_hook(event, result)
    event.success(record_edit, [history, base, image, info, instruction], view_outputs,
                  api_visibility="private")

    event2 = again.click(instruct_again, inputs=[history, *params], outputs=[result, info],
                         api_visibility="private", **gpu_kwargs())
    gallery_hook(event2, result)
    event2.success(record_again, [history, info, instruction], [*view_outputs, image],
                   api_visibility="private")

    image.upload(on_upload, image, view_outputs, api_visibility="private")
    image.clear(lambda: _views(EditHistory(), None), None, view_outputs,
                api_visibility="private")
    strip.select(on_select, history, [*view_outputs, image], api_visibility="private")
    stop.click(stop_handler(studio), None, None,
               api_visibility="private", queue=False)
