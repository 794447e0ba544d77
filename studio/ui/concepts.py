"""Concepts tab: learn a concept from a few pictures, SeedSelect, import, the library.

API: `/concept_train`, `/concepts`, `/seedselect`, `/concept_import`. A concept's token (e.g.
`<my-dog>`) works in the prompt of every tab once it is in the library.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from studio.backend.concepts.library import DEFAULT_LR, DEFAULT_STEPS, METHODS, preview_crops

from .common import (
    gpu_kwargs,
    info_json,
    result_outputs,
    session_of,
    spaces_gpu,
    stop_handler,
    user_errors,
)
from .common import (
    whole_number as _num,
)

INTRO = (
    "Upload 3-20 pictures of something hard to describe (your dog, a character, a rare bird), "
    "name it, and learn it. Then write its token, e.g. `<my-dog>`, in the prompt of **any** "
    "tab. *Textual inversion* learns one word, *LoRA* adapts the UNet (DreamBooth style), "
    "*SeedSelect* trains nothing and finds starting noises that draw it."
)
METHOD_HELP = ", ".join(
    f"{m}: {DEFAULT_STEPS[m]} steps, lr {DEFAULT_LR[m]:g}" for m in METHODS
)


def tokens_markdown(studio: Any) -> str:
    """A short Markdown list of the library's tokens (other tabs may show it)."""
    concepts = studio.list_concepts()
    if not concepts:
        return "No concepts yet: learn one in the Concepts tab."
    return "Concepts: " + ", ".join(f"`{c['token']}` ({c['method']})" for c in concepts)


def library_markdown(concepts: list[dict[str, Any]]) -> str:
    if not concepts:
        return "The library is empty."
    rows = ["| token | method | source | pictures | created |", "|---|---|---|---|---|"]
    for c in concepts:
        rows.append(f"| `{c['token']}` | {c['method']} | {c['source']} | "
                    f"{len(c.get('thumbnails', []))} | {c.get('created', '')} |")
    return "\n".join(rows)


def library_gallery(concepts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["thumbnails"][0], c["token"]) for c in concepts if c.get("thumbnails")]


def _progress(progress: gr.Progress | None, desc: str) -> Any:
    if progress is None:
        return None

    def report(step: int, total: int) -> None:
        progress((step, total), desc=desc, unit="steps")

    return report


def _files(value: Any) -> list[Any]:
    """gr.File values (paths, or dicts with a path) as a list."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [v.get("path") if isinstance(v, dict) else getattr(v, "name", v) for v in items]


def build(studio: Any, gallery_hook: Any) -> None:
    """Build the tab inside the current Blocks context."""
    gr.Markdown(INTRO)
    with gr.Tabs():
        with gr.Tab("Learn a concept"):
            with gr.Row():
                with gr.Column(scale=1):
                    name = gr.Textbox(label="Name (its token in prompts: <name>)", value="",
                                      placeholder="my-dog")
                    images = gr.File(label="3-20 pictures", file_count="multiple",
                                     file_types=["image"], value=None)
                    thumbs = gr.Gallery(
                        fit_columns=False, label="As used (centre-cropped)", columns=6,
                        height=150, interactive=False,
                    )
                    problems = gr.Markdown("")
                    method = gr.Radio(list(METHODS), value="textual_inversion", label="Method",
                                      info=f"Defaults (0 below) - {METHOD_HELP}")
                    with gr.Row():
                        steps = gr.Number(label="Steps (0 = default)", value=0, precision=0)
                        learning_rate = gr.Number(label="Learning rate (0 = default)", value=0)
                        seed = gr.Number(label="Seed (-1 = random)", value=-1, precision=0)
                    with gr.Accordion("Method options", open=False):
                        initializer = gr.Textbox(
                            label="Initializer / class word", value="object",
                            info="Textual inversion starts from this word; LoRA adds it after "
                            "the token; SeedSelect prompts 'a photo of <word>'.")
                        rank = gr.Slider(1, 128, value=4, step=1, label="LoRA rank")
                        semantic_weight = gr.Slider(
                            0, 1, value=0.5, step=0.05, label="SeedSelect semantic weight "
                            "(lambda; 1 - lambda weighs appearance)")
                        bootstrap = gr.Slider(0, 8, value=2, step=1,
                                              label="SeedSelect bootstrap variants")
                        sample_steps = gr.Slider(1, 50, value=10, step=1,
                                                 label="SeedSelect sampler (DDIM) steps")
                        resolution = gr.Slider(64, 1024, value=studio.native_size, step=8,
                                               label="Training resolution")
                        batch_size = gr.Slider(1, 16, value=2, step=1, label="Batch size")
                        prompt = gr.Textbox(
                            label="Prompt (SeedSelect target; preview for the others)",
                            value="")
                        preview_steps = gr.Slider(0, 150, value=20, step=1,
                                                  label="Preview steps (0 = no preview)")
                    with gr.Row():
                        train = gr.Button("Learn it", variant="primary")
                        stop = gr.Button("Stop")
                with gr.Column(scale=1):
                    image, info = result_outputs()
        with gr.Tab("SeedSelect"):
            with gr.Row():
                with gr.Column(scale=1):
                    ss_prompt = gr.Textbox(label="Prompt", value="", lines=2,
                                           placeholder="a photo of a rare bird")
                    ss_images = gr.File(label="3-20 example pictures", file_count="multiple",
                                        file_types=["image"], value=None)
                    with gr.Row():
                        ss_steps = gr.Slider(1, 150, value=20, step=1,
                                             label="Optimisation steps")
                        ss_weight = gr.Slider(0, 1, value=0.5, step=0.05,
                                              label="Semantic weight (lambda)")
                        ss_bootstrap = gr.Slider(0, 8, value=2, step=1,
                                                 label="Bootstrap variants")
                    with gr.Accordion("Settings", open=False):
                        ss_negative = gr.Textbox(label="Negative prompt", value="")
                        with gr.Row():
                            ss_seed = gr.Number(label="Seed (-1 = random)", value=-1,
                                                precision=0)
                            ss_guidance = gr.Slider(0, 30, value=7.5, step=0.5,
                                                    label="Guidance scale")
                        with gr.Row():
                            ss_width = gr.Slider(64, 2048, value=studio.native_size, step=8,
                                                 label="Width")
                            ss_height = gr.Slider(64, 2048, value=studio.native_size, step=8,
                                                  label="Height")
                        with gr.Row():
                            ss_sample_steps = gr.Slider(1, 50, value=10, step=1,
                                                        label="Sampler (DDIM) steps")
                            ss_bootstrap_steps = gr.Slider(
                                0, 150, value=0, step=1,
                                label="Steps per bootstrap variant (0 = a fifth)")
                            ss_lr = gr.Number(label="Learning rate", value=0.05)
                        ss_concept = gr.Textbox(
                            label="Start from a SeedSelect concept (name, optional)", value="")
                    with gr.Row():
                        ss_run = gr.Button("Select seeds", variant="primary")
                        ss_stop = gr.Button("Stop")
                with gr.Column(scale=1):
                    ss_image, ss_info = result_outputs()
                    ss_variants = gr.Gallery(
                        fit_columns=False, label="Bootstrap variants", columns=4, height=200,
                        interactive=False,
                    )
        with gr.Tab("Import"):
            with gr.Row():
                with gr.Column(scale=1):
                    imp_file = gr.File(label="Embedding or LoRA (.safetensors)",
                                       file_count="single",
                                       file_types=[".safetensors", ".pt", ".bin"], value=None)
                    imp_name = gr.Textbox(label="Name (default: from the file name)", value="")
                    imp_run = gr.Button("Import", variant="primary")
                with gr.Column(scale=1):
                    imp_info = gr.Code(label="Imported", language="json")
        with gr.Tab("Library") as lib_tab:
            # Filled at start-up and refreshed whenever the tab is opened (not with callable
            # values: those become public, unnamed API endpoints).
            known = studio.list_concepts()
            lib_md = gr.Markdown(library_markdown(known))
            lib_gallery = gr.Gallery(library_gallery(known), fit_columns=False,
                                     label="Concepts", columns=8, height=180, interactive=False)
            lib_json = gr.JSON(label="Concepts (JSON)", visible=False)
            refresh = gr.Button("Refresh")

    # ------------------------------------------------------------------ handlers
    def show_crops(files: Any) -> tuple[list[Any], str]:
        crops, errors = preview_crops(_files(files))
        return crops, "\n".join(f"- {e}" for e in errors)

    images.change(show_crops, images, [thumbs, problems], api_visibility="private")

    @spaces_gpu
    @user_errors
    def concept_train(
        name: str, images: Any, method: str, steps: float, learning_rate: float, rank: float,
        initializer: str, semantic_weight: float, bootstrap: float, resolution: float,
        batch_size: float, sample_steps: float, prompt: str, seed: float,
        preview_steps: float, request: gr.Request = None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),
    ) -> tuple[str | None, str]:
        """Learn a concept from 3-20 pictures. Returns [preview image, info JSON]."""
        result = studio.concept_train(
            {
                "name": name, "images": _files(images), "method": method,
                "steps": _num(steps), "learning_rate": learning_rate, "rank": _num(rank),
                "initializer": initializer, "semantic_weight": semantic_weight,
                "bootstrap": _num(bootstrap), "resolution": _num(resolution),
                "batch_size": _num(batch_size), "sample_steps": _num(sample_steps),
                "prompt": prompt or "", "seed": _num(seed),
                "preview_steps": _num(preview_steps),
            },
            progress=_progress(progress, "learning"),
            cancel=studio.cancel_token(session_of(request)),
        )
        return (str(result.path) if result.path else None), info_json(result.info)

    train_inputs = [name, images, method, steps, learning_rate, rank, initializer,
                    semantic_weight, bootstrap, resolution, batch_size, sample_steps, prompt,
                    seed, preview_steps]
    event = train.click(concept_train, inputs=train_inputs, outputs=[image, info],
                        api_name="concept_train", **gpu_kwargs())
    gallery_hook(event, image)

    @spaces_gpu
    @user_errors
    def seedselect(
        prompt: str, images: Any, steps: float, semantic_weight: float, bootstrap: float,
        negative_prompt: str, seed: float, guidance_scale: float, width: float, height: float,
        sample_steps: float, bootstrap_steps: float, learning_rate: float, concept: str,
        request: gr.Request = None, progress: gr.Progress = gr.Progress(track_tqdm=True),
    ) -> tuple[str, str]:
        """SeedSelect: optimise the starting noise to match the examples. [image, info]."""
        result = studio.seedselect(
            {
                "prompt": prompt or "", "images": _files(images), "steps": _num(steps),
                "semantic_weight": semantic_weight, "bootstrap": _num(bootstrap),
                "negative_prompt": negative_prompt or "", "seed": _num(seed),
                "guidance_scale": guidance_scale, "width": _num(width),
                "height": _num(height), "sample_steps": _num(sample_steps),
                "bootstrap_steps": _num(bootstrap_steps), "learning_rate": learning_rate,
                "concept": concept or "",
            },
            progress=_progress(progress, "optimising z_T"),
            cancel=studio.cancel_token(session_of(request)),
        )
        return str(result.path), info_json(result.info)

    ss_inputs = [ss_prompt, ss_images, ss_steps, ss_weight, ss_bootstrap, ss_negative, ss_seed,
                 ss_guidance, ss_width, ss_height, ss_sample_steps, ss_bootstrap_steps, ss_lr,
                 ss_concept]
    ss_event = ss_run.click(seedselect, inputs=ss_inputs, outputs=[ss_image, ss_info],
                            api_name="seedselect", **gpu_kwargs())
    gallery_hook(ss_event, ss_image)

    def variants_of(info_text: str) -> list[str]:
        try:
            return list(json.loads(info_text or "{}").get("variants", []))
        except json.JSONDecodeError:
            return []

    ss_event.then(variants_of, ss_info, ss_variants, api_visibility="private")

    for button in (stop, ss_stop):
        button.click(stop_handler(studio), None, None,
                     api_visibility="private", queue=False)

    @user_errors
    def concept_import(file: Any, name: str) -> str:
        """Import a textual-inversion embedding or a LoRA file; returns its info JSON."""
        files = _files(file)
        if not files:
            raise gr.Error("choose an embedding or LoRA file to import")
        return info_json(studio.import_concept(files[0], name or ""))

    imp_run.click(concept_import, [imp_file, imp_name], imp_info, api_name="concept_import",
                  **gpu_kwargs())

    def concepts() -> list[dict[str, Any]]:
        """Every concept of the library as a JSON list."""
        return studio.list_concepts()

    def render(items: list[dict[str, Any]] | None) -> tuple[str, list[tuple[str, str]]]:
        items = items or []
        return library_markdown(items), library_gallery(items)

    listed = refresh.click(concepts, None, lib_json, api_name="concepts")
    listed.then(render, lib_json, [lib_md, lib_gallery], api_visibility="private")
    lib_tab.select(lambda: render(studio.list_concepts()), None, [lib_md, lib_gallery],
                   api_visibility="private")
    for done in (event, ss_event):
        done.then(concepts, None, lib_json, api_visibility="private").then(
            render, lib_json, [lib_md, lib_gallery], api_visibility="private")
