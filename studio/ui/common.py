"""UI helpers shared by every tab: error mapping, the GPU queue, common parameter widgets."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import gradio as gr

from studio.backend.common import Cancelled, StudioError
from studio.backend.models.registry import ModelUnavailableError
from studio.backend.models.schedulers import DEFAULT_SCHEDULER, USER_SCHEDULERS

log = logging.getLogger(__name__)

GPU_QUEUE = "gpu"  # every event that runs a model shares this concurrency_id
PRIVATE = {"api_visibility": "private"}  # UI-only events: not part of the named API
USER_ERRORS = (ValueError, StudioError, ModelUnavailableError)


def gpu_kwargs() -> dict[str, Any]:
    """Event kwargs for model work: one queue, one job at a time on the device."""
    return {"concurrency_id": GPU_QUEUE, "concurrency_limit": 1}


def spaces_gpu(fn: Callable) -> Callable:
    """Wrap with `spaces.GPU` on Hugging Face ZeroGPU; unchanged everywhere else."""
    if os.environ.get("SPACES_ZERO_GPU"):
        try:
            import spaces  # type: ignore[import-not-found]

            return spaces.GPU(fn)
        except ImportError:
            pass
    return fn


def user_errors(fn: Callable) -> Callable:
    """Turn backend errors into `gr.Error` toasts (same text for the UI and the API).

    Unexpected exceptions are logged with a traceback and reported briefly; the server keeps
    serving either way.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Cancelled as err:
            raise gr.Error(str(err), title="Cancelled") from err
        except USER_ERRORS as err:
            raise gr.Error(str(err)) from err
        except Exception as err:
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Internal error ({type(err).__name__}): {err}") from err

    return wrapper


def labelled_input_errors(component: Any) -> Any:
    """Make gradio's own input checks say which parameter is wrong (API calls send anything).

    Wraps this one component's `preprocess` (an unreadable upload, a slider value out of range
    or not a number). Done per instance, not by subclassing: gradio writes a `.pyi` stub next
    to any module that defines a component class.
    """
    preprocess = component.preprocess
    label = component.label

    def checked(payload: Any) -> Any:
        if isinstance(component, gr.Slider) and (
            isinstance(payload, bool) or not isinstance(payload, (int, float))
        ):
            raise gr.Error(f"{label} must be a number, got {payload!r}")
        try:
            return preprocess(payload)
        except gr.Error as err:
            raise gr.Error(f"{label}: {err.message}") from err
        except Exception as err:  # noqa: BLE001 - PIL raises many kinds for unreadable files
            if not isinstance(component, gr.Image):
                raise
            raise gr.Error(
                f"image could not be read as an image ({type(err).__name__}). Use a PNG, JPEG "
                "or WebP file."
            ) from err

    component.preprocess = checked
    return component


def progress_adapter(progress: gr.Progress | None) -> Callable[[int, int], None] | None:
    if progress is None:
        return None

    def report(step: int, total: int) -> None:
        progress((step, total), desc="denoising", unit="steps")

    return report


def whole_number(value: Any) -> Any:
    """Whole floats from sliders/numbers become ints; anything else is left for validation."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def info_json(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=2, default=str)


def session_of(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "default"


def stop_handler(studio: Any) -> Callable[..., None]:
    """Handler for a Stop button: cancels this browser session's run at its next step.

    The `gr.Request` annotation matters: gradio injects the request (and so the session)
    only into parameters annotated with it.
    """

    def stop(request: gr.Request) -> None:
        studio.cancel(session_of(request))

    return stop


def common_params(
    prompt_label: str = "Prompt", prompt_placeholder: str = "", elem_prefix: str | None = None,
    size: int = 512,
) -> dict[str, Any]:
    """The common generation widgets, keyed by their API parameter names (in API order).

    With `elem_prefix`, each widget gets the elem_id `<prefix>-<name>` (browser tests use it).
    """
    c: dict[str, Any] = {}
    c["prompt"] = gr.Textbox(label=prompt_label, lines=2, placeholder=prompt_placeholder)
    c["negative_prompt"] = gr.Textbox(label="Negative prompt", lines=1, value="")
    with gr.Accordion("Generation settings", open=False):
        with gr.Row():
            c["seed"] = gr.Number(label="Seed (-1 = random)", value=-1, precision=0)
            c["steps"] = gr.Slider(1, 150, value=25, step=1, label="Steps")
            c["guidance_scale"] = gr.Slider(0, 30, value=7.5, step=0.5, label="Guidance scale")
        with gr.Row():
            c["width"] = gr.Slider(64, 2048, value=size, step=8, label="Width")
            c["height"] = gr.Slider(64, 2048, value=size, step=8, label="Height")
        with gr.Row():
            c["scheduler"] = gr.Dropdown(list(USER_SCHEDULERS), value=DEFAULT_SCHEDULER,
                                         label="Sampler")
            c["fast"] = gr.Checkbox(
                label="Fast mode (LCM-LoRA, 4 steps)", value=False,
                info="Loads the LCM-LoRA and samples in 4 steps with guidance 1.",
            )
    for name, component in c.items():
        labelled_input_errors(component)
        if elem_prefix:
            component.elem_id = f"{elem_prefix}-{name}"
    return c


def result_outputs(elem_prefix: str | None = None) -> tuple[gr.Image, gr.Code]:
    """The `[image, info]` outputs every generating tab shows."""
    image = gr.Image(label="Result", type="filepath", format="png", interactive=False,
                     elem_id=f"{elem_prefix}-result" if elem_prefix else None)
    with gr.Accordion("Info (JSON)", open=False):
        info = gr.Code(label="Info", language="json",
                       elem_id=f"{elem_prefix}-info" if elem_prefix else None)
    return image, info
