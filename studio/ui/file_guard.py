"""Every file reference a client sends is checked before gradio touches the file.

Gradio turns each `{"path": ...}` in an event's data into a file before any studio code runs:
`Blocks.preprocess_data` copies it into its cache and `gr.Image.preprocess` opens it (decoding,
converting, re-saving non-RGB images into the cache). Gradio's own check is not enough: it
looks at the upload folder only for references that carry `meta` (`{"_type":
"gradio.FileData"}`), so a reference without it names any path of the server. That was an
existence and type oracle (the error differed for a missing file and a non-image), a way to
hang the only worker for good (a pipe such as `/proc/self/fd/<n>` blocks in `read()`), and,
through events without an API name (by `fn_index`), a way to copy server images out; and a
URL there makes the server fetch it.

So every event, named or not, queued or not, passes `check_references` first: a reference
must carry `meta`, and its path, checked as a string first (normalised, under a folder the
server owns: gradio's cache of uploads and results, the studio's outputs), and only then on
disk (its real path still there, a regular file). A refusal touches nothing outside those
folders and says the same for a file that exists and one that does not.

Sizes: gradio has one upload limit for every file (`max_file_size`), which must let a LoRA
through (`--max-model-mb`); images must stay under `--max-file-mb`. So a file larger than
that is refused here unless the event's input that carries it takes model files
(`MODEL_FILE_CLASS` among its `elem_classes`).
"""

from __future__ import annotations

import os
import stat
from pathlib import PurePath
from typing import Any

import gradio as gr

from studio.backend.files import allowed_prefixes

MAX_DEPTH = 32  # nesting a value may have (the studio's own values are a few levels deep)
MODEL_FILE_CLASS = "model-file"  # elem_classes of an input that takes model files
MB = 1024 * 1024


def _refusal(path: Any) -> str:
    name = PurePath(path).name if isinstance(path, str) and path else "?"
    return (f"A file in this request was named by a path ('{name}'): the server opens only "
            "files uploaded to it or made by it. Upload the file instead.")


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def reference_error(ref: dict[str, Any]) -> str | None:
    """Why the file reference `ref` is refused, or None when it names a file the server
    owns (see the module docstring)."""
    path, meta = ref.get("path"), ref.get("meta")
    if not isinstance(meta, dict) or meta.get("_type") != "gradio.FileData":
        return _refusal(path)
    if not isinstance(path, str) or not path or "\x00" in path or "://" in path:
        return _refusal(path)
    # 1. as a string: normalised as the OS would resolve it, inside a folder the server owns
    normal = os.path.normpath(os.path.join(os.getcwd(), path))
    roots = allowed_prefixes()
    if not any(_under(normal, root) for root in roots):
        return _refusal(path)
    # 2. only now on disk (inside those folders): no link out, a regular file
    real = os.path.realpath(normal)
    if not any(_under(real, root) for root in roots):
        return _refusal(path)
    try:
        mode = os.stat(real).st_mode
    except OSError:
        return _refusal(path)
    if not stat.S_ISREG(mode):
        return _refusal(path)
    return None


def size_error(ref: dict[str, Any], max_bytes: int | None) -> str | None:
    """Why an accepted reference's file is too large for its input, or None."""
    if max_bytes is None:
        return None
    size = os.stat(os.path.realpath(ref["path"])).st_size
    if size <= max_bytes:
        return None
    return (f"This file is {size / MB:.1f} MB; images and pictures may be at most "
            f"{max_bytes / MB:g} MB (--max-file-mb). Model files (a LoRA, an embedding) are "
            "imported in Concepts, up to --max-model-mb.")


def check_references(value: Any, depth: int = 0, max_bytes: int | None = None) -> None:
    """Raise gr.Error (the client sees its text) for the first refused file reference in
    `value` (or one whose file is larger than `max_bytes`), or for a value nested deeper than
    any the studio takes."""
    if depth > MAX_DEPTH:
        raise gr.Error(f"A value in this request is nested more than {MAX_DEPTH} levels deep; "
                       "the studio's inputs are a few levels at most.")
    if isinstance(value, dict):
        if "path" in value:
            error = reference_error(value) or size_error(value, max_bytes)
            if error:
                raise gr.Error(error)
        for item in value.values():
            check_references(item, depth + 1, max_bytes)
    elif isinstance(value, (list, tuple)):
        for item in value:
            check_references(item, depth + 1, max_bytes)


def takes_model_files(component: Any) -> bool:
    return MODEL_FILE_CLASS in (getattr(component, "elem_classes", None) or [])


def install_file_guard(demo: gr.Blocks, max_file_bytes: int | None = None) -> None:
    """Check every event's inputs of `demo` before gradio's preprocessing touches a file
    (`Blocks.preprocess_data` is where every event's data first reaches files: the queue,
    `/call`, `/run` and events without an API name all pass it); files larger than
    `max_file_bytes` pass only inputs that take model files."""
    preprocess = demo.preprocess_data

    async def guarded(block_fn: Any, inputs: list[Any], state: Any,
                      explicit_call: bool = False) -> Any:
        components = list(getattr(block_fn, "inputs", None) or [])
        for i, value in enumerate(inputs):
            model = i < len(components) and takes_model_files(components[i])
            check_references(value, max_bytes=None if model else max_file_bytes)
        return await preprocess(block_fn, inputs, state, explicit_call)

    demo.preprocess_data = guarded  # type: ignore[method-assign]
