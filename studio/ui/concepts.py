"""Concepts tab: learn a concept from a few pictures, SeedSelect, import, the library.

API: `/concept_train`, `/concepts`, `/seedselect`, `/concept_import`. A concept's token (e.g.
`<my-dog>`) works in the prompt of every tab once it is in the library.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from studio.backend.concepts.request import DEFAULT_LR, DEFAULT_STEPS, METHODS, preview_crops
from studio.backend.concepts.seedselect import MAX_IMAGES

from .common import (
    PRIVATE,
    GenerationTab,
    current_picker,
    file_paths,
    gpu_kwargs,
    info_json,
    path_and_info,
    user_errors,
)
from .file_guard import MODEL_FILE_CLASS
from .sendto import added_file, register_target

INTRO = (
    "Upload 3-20 pictures of something hard to describe (your dog, a character, a rare bird), "
    "name it, and learn it. Then write its token, e.g. `<my-dog>`, in the prompt of **any** "
    "tab. *Textual inversion* learns one word, *LoRA* adapts the UNet (DreamBooth style), "
    "*SeedSelect* trains nothing and finds starting noises that draw it."
)
SHARED_NOTE = (
    "**Shared library.** Everyone using this studio sees, uses and can add to the same "
    "concepts: do not upload pictures you would not show every visitor."
)
METHOD_HELP = ", ".join(
    f"{m}: {DEFAULT_STEPS[m]} steps, lr {DEFAULT_LR[m]:g}" for m in METHODS
)


def library_markdown(concepts: list[dict[str, Any]]) -> str:
    if not concepts:
        return "The library is empty."
    rows = ["| token | method | source | pictures | created |", "|---|---|---|---|---|"]
    for c in concepts:
        rows.append(f"| `{c['token']}` | {c['method']} | {c['source']} | "
                    f"{len(c.get('thumbnails', []))} | {c.get('created', '')} |")
    return "\n".join(rows)


_files = file_paths


TRAIN_PARAMS = ("name", "images", "method", "steps", "learning_rate", "rank", "initializer",
                "semantic_weight", "bootstrap", "resolution", "batch_size", "sample_steps",
                "prompt", "seed", "preview_steps")
SEEDSELECT_PARAMS = ("prompt", "images", "steps", "semantic_weight", "bootstrap",
                     "negative_prompt", "seed", "guidance_scale", "width", "height",
                     "sample_steps", "bootstrap_steps", "learning_rate", "concept")


def with_files(data: dict[str, Any]) -> dict[str, Any]:
    """The request with gr.File values (paths, or dicts with a path) as a list of paths."""
    return {**data, "images": _files(data["images"])}


def variants_of(studio: Any, result: Any) -> list[str]:
    """SeedSelect's bootstrap variants as files (kept on the server, in a gr.State)."""
    return [str(studio.outputs.folder / name) for name in result.info.get("variants", [])]


def build(studio: Any, gallery_hook: Any) -> None:
    """Build the tab inside the current Blocks context."""
    gr.Markdown(INTRO)
    if studio.shared_library:
        gr.Markdown(SHARED_NOTE, elem_id="concepts-shared-note")
    with gr.Tabs() as inner:
        with gr.Tab("Learn a concept", id="concepts-learn"):
            trained, pictures = _learn_tab(studio, gallery_hook)
        with gr.Tab("SeedSelect"):
            selected = _seedselect_tab(studio, gallery_hook)
        with gr.Tab("Import"):
            _import_tab(studio)
        with gr.Tab("Library") as lib_tab:
            _library_tab(studio, lib_tab, (trained, selected))
    register_target("Concepts", "concepts", [pictures, inner],
                    lambda path, current: [added_file(path, current, MAX_IMAGES),
                                           gr.Tabs(selected="concepts-learn")],
                    inputs=[pictures])


def _learn_tab(studio: Any, gallery_hook: Any) -> tuple[Any, Any]:
    """The Learn tab: (its training event, its pictures)."""
    tab = GenerationTab(studio, "concept_train", gallery_hook)
    w: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(scale=1):
            w["name"] = gr.Textbox(label="Name (its token in prompts: <name>)", value="",
                                   placeholder="my-dog")
            w["images"] = gr.File(label="3-20 pictures", file_count="multiple",
                                  file_types=["image"], value=None)
            thumbs = gr.Gallery(fit_columns=False, label="As used (centre-cropped)",
                                columns=6, height=150, interactive=False)
            problems = gr.Markdown("")
            w["method"] = gr.Radio(list(METHODS), value="textual_inversion", label="Method",
                                   info=f"Defaults (0 below) - {METHOD_HELP}")
            with gr.Row():
                w["steps"] = gr.Number(label="Steps (0 = default)", value=0, precision=0)
                w["learning_rate"] = gr.Number(label="Learning rate (0 = default)", value=0)
                w["seed"] = gr.Number(label="Seed (-1 = random)", value=-1, precision=0)
            with gr.Accordion("Method options", open=False):
                w.update(_method_options(studio))
            train, _ = tab.buttons("Learn it")
        with gr.Column(scale=1):
            tab.results()

    def show_crops(files: Any) -> tuple[list[Any], str]:
        crops, errors = preview_crops(_files(files))
        return crops, "\n".join(f"- {e}" for e in errors)

    w["images"].change(user_errors(show_crops), w["images"], [thumbs, problems], **PRIVATE)
    event = tab.wire(train.click, {k: w[k] for k in TRAIN_PARAMS}, api_name="concept_train",
                     run=lambda data, progress, cancel, preview: studio.concept_train(
                         data, progress, cancel, preview),
                     to_request=with_files, progress_desc="learning",
                     doc="Learn a concept from 3-20 pictures. Returns [preview image, info "
                         "JSON].")
    return event, w["images"]


def _method_options(studio: Any) -> dict[str, Any]:
    w: dict[str, Any] = {}
    w["initializer"] = gr.Textbox(
        label="Initializer / class word", value="object",
        info="Textual inversion starts from this word; LoRA adds it after the token; "
             "SeedSelect prompts 'a photo of <word>'.")
    w["rank"] = gr.Slider(1, 128, value=4, step=1, label="LoRA rank")
    w["semantic_weight"] = gr.Slider(
        0, 1, value=0.5, step=0.05,
        label="SeedSelect semantic weight (lambda; 1 - lambda weighs appearance)")
    w["bootstrap"] = gr.Slider(0, 8, value=2, step=1, label="SeedSelect bootstrap variants")
    w["sample_steps"] = gr.Slider(1, 50, value=10, step=1,
                                  label="SeedSelect sampler (DDIM) steps")
    w["resolution"] = gr.Slider(64, 1024, value=studio.native_size, step=8,
                                label="Training resolution")
    w["batch_size"] = gr.Slider(1, 16, value=2, step=1, label="Batch size")
    w["prompt"] = gr.Textbox(label="Prompt (SeedSelect target; preview for the others)",
                             value="")
    w["preview_steps"] = gr.Slider(0, 150, value=20, step=1,
                                   label="Preview steps (0 = no preview)")
    return w


def _seedselect_tab(studio: Any, gallery_hook: Any) -> Any:
    tab = GenerationTab(studio, "seedselect", gallery_hook)
    w: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(scale=1):
            w["prompt"] = gr.Textbox(label="Prompt", value="", lines=2,
                                     placeholder="a photo of a rare bird")
            w["images"] = gr.File(label="3-20 example pictures", file_count="multiple",
                                  file_types=["image"], value=None)
            with gr.Row():
                w["steps"] = gr.Slider(1, 150, value=20, step=1, label="Optimisation steps")
                w["semantic_weight"] = gr.Slider(0, 1, value=0.5, step=0.05,
                                                 label="Semantic weight (lambda)")
                w["bootstrap"] = gr.Slider(0, 8, value=2, step=1, label="Bootstrap variants")
            with gr.Accordion("Settings", open=False):
                w.update(_seedselect_settings(studio.native_size))
            run, _ = tab.buttons("Select seeds")
        with gr.Column(scale=1):
            tab.results()
            variants = gr.Gallery(fit_columns=False, label="Bootstrap variants", columns=4,
                                  height=200, interactive=False)
    kept = gr.State([])  # the variants' files, on the server
    event = tab.wire(run.click, {k: w[k] for k in SEEDSELECT_PARAMS}, api_name="seedselect",
                     to_request=with_files, progress_desc="optimising z_T",
                     outputs=lambda r: (*path_and_info(r), variants_of(studio, r)),
                     extra_outputs=[kept],
                     doc="SeedSelect: optimise the starting noise to match the examples. "
                         "[image, info].")
    event.then(lambda files: files, kept, variants, **PRIVATE)
    return event


def _seedselect_settings(size: int) -> dict[str, Any]:
    w: dict[str, Any] = {}
    w["negative_prompt"] = gr.Textbox(label="Negative prompt", value="")
    with gr.Row():
        w["seed"] = gr.Number(label="Seed (-1 = random)", value=-1, precision=0)
        w["guidance_scale"] = gr.Slider(0, 30, value=7.5, step=0.5, label="Guidance scale")
    with gr.Row():
        w["width"] = gr.Slider(64, 2048, value=size, step=8, label="Width")
        w["height"] = gr.Slider(64, 2048, value=size, step=8, label="Height")
    with gr.Row():
        w["sample_steps"] = gr.Slider(1, 50, value=10, step=1, label="Sampler (DDIM) steps")
        w["bootstrap_steps"] = gr.Slider(0, 150, value=0, step=1,
                                         label="Steps per bootstrap variant (0 = a fifth)")
        w["learning_rate"] = gr.Number(label="Learning rate", value=0.05)
    w["concept"] = gr.Textbox(label="Start from a SeedSelect concept (name, optional)",
                              value="")
    return w


def _import_tab(studio: Any) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            # a model file: up to --max-model-mb (the file guard holds images to less)
            file = gr.File(label="Embedding or LoRA (.safetensors)", file_count="single",
                           file_types=[".safetensors"], value=None,
                           elem_classes=[MODEL_FILE_CLASS])
            name = gr.Textbox(label="Name (default: from the file name)", value="")
            run = gr.Button("Import", variant="primary")
        with gr.Column(scale=1):
            info = gr.Code(label="Imported", language="json")

    @user_errors
    def concept_import(file: Any, name: str, model: str | None = None) -> str:
        """Import a textual-inversion embedding or a LoRA file for the family of `model` (a
        name /models lists; empty = the default); returns its info JSON."""
        files = _files(file)
        if not files:
            raise gr.Error("choose an embedding or LoRA file to import")
        return info_json(studio.import_concept(files[0], name or "", model or ""))

    picker = current_picker()
    run.click(concept_import, [file, name, *([picker] if picker is not None else [])], info,
              api_name="concept_import", **gpu_kwargs())


def _library_tab(studio: Any, lib_tab: Any, events: tuple[Any, ...]) -> None:
    # Filled at start-up and refreshed whenever the tab is opened (not with callable
    # values: those become public, unnamed API endpoints). Thumbnails go to the browser
    # as images, not as paths: the library is not a folder gradio serves.
    md = gr.Markdown(library_markdown(studio.list_concepts()))
    gallery = gr.Gallery(studio.concept_thumbnails(), fit_columns=False, label="Concepts",
                         columns=8, height=180, interactive=False)
    as_json = gr.JSON(label="Concepts (JSON)", visible=False)
    refresh = gr.Button("Refresh")

    def concepts() -> list[dict[str, Any]]:
        """Every concept of the library as a JSON list."""
        return studio.list_concepts()

    def render() -> tuple[str, list[Any]]:
        return library_markdown(studio.list_concepts()), studio.concept_thumbnails()

    refresh.click(concepts, None, as_json, api_name="concepts").then(
        render, None, [md, gallery], **PRIVATE)
    lib_tab.select(render, None, [md, gallery], **PRIVATE)
    for done in events:
        done.then(render, None, [md, gallery], **PRIVATE)
