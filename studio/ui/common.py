"""UI helpers shared by every tab: the generation-tab helper, error mapping, the GPU queue.

`GenerationTab` is the one place a tab's model work is wired: it builds the common widgets,
turns the widget values into the request dict, runs the job for the browser session (its
cancel token, progress, errors) and returns `(path, info)`. Every tab's Generate and Stop go
through it, so the `gr.Request` annotation that lets Stop find the session is written once.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import json
import logging
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gradio as gr
from PIL import Image

from studio.backend.common import Cancelled, CancelToken, Result, StudioError
from studio.backend.images import too_large_message, unreadable_reason
from studio.backend.models.registry import DeviceMemoryError, ModelUnavailableError
from studio.backend.models.schedulers import DEFAULT_SCHEDULER, USER_SCHEDULERS
from studio.backend.previews import PreviewFn
from studio.backend.requests import RequestError

from .sending import register_source

log = logging.getLogger(__name__)

GPU_QUEUE = "gpu"  # every event that runs a model shares this concurrency_id
PRIVATE = {"api_visibility": "private"}  # UI-only events: not part of the named API
USER_ERRORS = (RequestError, StudioError, ModelUnavailableError, DeviceMemoryError)
TEXT_PARAMS = ("prompt", "negative_prompt", "instruction", "hires_prompt")
SUBMITTED = "studio_submitted"  # request.state attribute: when the queue took the job
AS_DICT = "values"  # the one parameter of a handler wired to a set of inputs
DEFAULT_GPU_S = 60.0  # ZeroGPU's own default window, for calls that cannot be estimated


_GPU_JOBS = [1]  # jobs the backend runs at once; build_app sets it from studio.concurrency
# the page's model picker while build_app builds the tabs: every generating event gets its
# value as the trailing `model` parameter (see GenerationTab.wire)
_PICKER: contextvars.ContextVar[Any] = contextvars.ContextVar("model_picker", default=None)
# a saved request names its own model; upscaling runs no checkpoint
NO_MODEL_TASKS = ("regenerate", "upscale")


def current_picker() -> Any:
    """The page's model picker while the tabs are built (None outside build_app)."""
    return _PICKER.get()


@contextlib.contextmanager
def model_picker(component: Any) -> Iterator[None]:
    """Tabs built inside this block send `component`'s value as their jobs' model."""
    token = _PICKER.set(component)
    try:
        yield
    finally:
        _PICKER.reset(token)


def set_gpu_jobs(jobs: int) -> None:
    """How many model jobs run at once (1 per device: 1 locally, the replicas on Ray)."""
    _GPU_JOBS[0] = max(1, int(jobs))


def gpu_kwargs() -> dict[str, Any]:
    """Event kwargs for model work: one queue, as many jobs at once as the backend has
    devices (one locally)."""
    return {"concurrency_id": GPU_QUEUE, "concurrency_limit": _GPU_JOBS[0]}


def spaces_gpu(fn: Callable, duration: Callable[..., float] | None = None) -> Callable:
    """Wrap with `spaces.GPU` on Hugging Face ZeroGPU; unchanged everywhere else.

    `duration(*args, **kwargs)` gives the seconds of GPU time the call may need (ZeroGPU
    gives each call a short window, 60 s by default); it gets the handler's own arguments.
    """
    if os.environ.get("SPACES_ZERO_GPU"):
        try:
            import spaces  # type: ignore[import-not-found]
        except ImportError:
            return fn
        return spaces.GPU(duration=duration)(fn) if duration else spaces.GPU(fn)
    return fn


def user_errors(fn: Callable) -> Callable:
    """Turn backend errors into `gr.Error` toasts (same text for the UI and the API).

    Only the studio's own messages reach the client. Anything unexpected is logged with a
    traceback under a short id and the client sees just that id: raw exception text can name
    server paths or device details.
    """

    if inspect.isgeneratorfunction(fn):  # a streaming handler: the same, for each step

        @functools.wraps(fn)
        def streaming(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as err:
                raise _shown(err, fn) from err

        return streaming

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as err:
            raise _shown(err, fn) from err

    return wrapper


def _shown(err: Exception, fn: Callable) -> gr.Error:
    """The gr.Error a client sees for `err` (see user_errors)."""
    if isinstance(err, Cancelled):
        return gr.Error(str(err), title="Cancelled")
    if isinstance(err, USER_ERRORS):
        return gr.Error(str(err))
    error_id = uuid.uuid4().hex[:8]
    log.error("unexpected error %s in %s", error_id, fn.__name__, exc_info=err)
    return gr.Error(
        f"Internal error (id {error_id}): the request failed on the server. The details "
        "are in the server log under that id."
    )


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
            if isinstance(err, Image.DecompressionBombError):
                raise gr.Error(too_large_message(label or "image", err)) from err
            raise gr.Error(
                f"{label or 'image'} could not be read as an image ({unreadable_reason(err)}). "
                "Use a PNG, JPEG or WebP file."
            ) from err

    component.preprocess = checked
    return component


def progress_adapter(progress: gr.Progress | None, desc: str = "denoising"
                     ) -> Callable[[int, int], None] | None:
    if progress is None:
        return None

    def report(step: int, total: int) -> None:
        progress((step, total), desc=desc, unit="steps")

    return report


def file_paths(value: Any) -> list[Any]:
    """gr.File values (paths, or dicts with a path) as a list (none: empty)."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [v.get("path") if isinstance(v, dict) else getattr(v, "name", v) for v in items]


def whole_number(value: Any) -> Any:
    """Whole floats from sliders/numbers become ints; anything else is left for validation."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def info_json(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=2, default=str)


def session_of(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "default"


def submitted_at(request: gr.Request | None) -> float | None:
    """When the queue took this job (set by the queue guard), or None if unknown."""
    http = getattr(request, "request", None)
    state = getattr(http, "state", None)
    return getattr(state, SUBMITTED, None)


def job_token(studio: Any, request: gr.Request | None) -> CancelToken:
    """The cancel token of a job of this browser session (Stop and /cancel reach it)."""
    return studio.job_token(session_of(request), submitted_at(request))


def stop_handler(studio: Any) -> Callable[..., None]:
    """Handler for a Stop button: cancels this browser session's run at its next step and
    the jobs it still has waiting in the queue.

    The `gr.Request` annotation matters: gradio injects the request (and so the session)
    only into parameters annotated with it.
    """

    def stop(request: gr.Request) -> None:
        studio.cancel(session_of(request))

    return stop


def common_params(
    prompt_label: str = "Prompt", prompt_placeholder: str = "", elem_prefix: str | None = None,
    size: int = 512, prompt_value: str | None = None,
) -> dict[str, Any]:
    """The common generation widgets, keyed by their API parameter names (in API order).

    With `elem_prefix`, each widget gets the elem_id `<prefix>-<name>` (browser tests use it).
    `prompt_value=""` makes the prompt optional for API clients (tabs whose prompt may be
    empty); by default they must give one.
    """
    c: dict[str, Any] = {}
    c["prompt"] = gr.Textbox(label=prompt_label, lines=2, placeholder=prompt_placeholder,
                             value=prompt_value)
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


def hires_params(studio: Any, elem_prefix: str) -> dict[str, Any]:
    """The "Hires fix" accordion (closed; scale 1 = off), keyed by the API's trailing
    parameter names: wire them with `GenerationTab.wire(..., trailing=...)`."""
    h: dict[str, Any] = {}
    with gr.Accordion("Hires fix (a second pass at a larger size)", open=False,
                      elem_id=f"{elem_prefix}-hires"):
        with gr.Row():
            h["hires_scale"] = gr.Slider(1, 4, value=1, step=0.25, label="Upscale by (1 = off)")
            h["hires_upscaler"] = gr.Dropdown(
                studio.upscaler_names(), value="latent", label="Upscaler",
                allow_custom_value=True,
                info="latent: the first pass's latents enlarged; lanczos, none: pixels; "
                     "others: upscaler models (--upscalers-dir)")
        with gr.Row():
            h["hires_denoise"] = gr.Slider(0, 1, value=0.5, step=0.05,
                                           label="Denoising strength")
            h["hires_steps"] = gr.Slider(0, 150, value=0, step=1,
                                         label="Hires steps (0 = as the first pass)")
        h["hires_prompt"] = gr.Textbox(label="Hires prompt (empty = the same prompt)",
                                       lines=1, value="")
    for name, component in h.items():
        labelled_input_errors(component)
        component.elem_id = f"{elem_prefix}-{name}"
    return h


def result_outputs(elem_prefix: str | None = None) -> tuple[gr.Image, gr.Code]:
    """The `[image, info]` outputs every generating tab shows."""
    # format applies to images handed over as pixels: the live previews (light JPEGs); the
    # final result is the saved PNG's path, served as it is
    image = gr.Image(label="Result", type="filepath", format="jpeg", interactive=False,
                     elem_id=f"{elem_prefix}-result" if elem_prefix else None)
    with gr.Accordion("Info (JSON)", open=False):
        info = gr.Code(label="Info", language="json",
                       elem_id=f"{elem_prefix}-info" if elem_prefix else None)
    return image, info


def request_values(names: Sequence[str], values: Sequence[Any],
                   rename: dict[str, str] | None = None) -> dict[str, Any]:
    """Widget values as a request dict: whole numbers as ints, empty text as "", API names
    mapped to request fields (`rename`, e.g. instruction -> prompt)."""
    out = {}
    for name, value in zip(names, values, strict=True):
        if name in TEXT_PARAMS and value is None:
            value = ""
        out[(rename or {}).get(name, name)] = whole_number(value)
    return out


def without_left_out(data: dict[str, Any], optional: Sequence[str]) -> dict[str, Any]:
    """Optional parameters an API client left out (None) fall back to the request's
    defaults."""
    return {k: v for k, v in data.items() if not (k in optional and v is None)}


def path_and_info(result: Result) -> tuple[str | None, str]:
    """The `[image, info]` an endpoint returns."""
    return (str(result.path) if result.path else None), info_json(result.info)


Runner = Callable[
    [dict[str, Any], Callable[[int, int], None] | None, CancelToken, PreviewFn | None], Result]
Preview = tuple[Image.Image, int, int]  # a live preview: (image, step, total)


def streamed(work: Callable[[PreviewFn], Result], cancel: CancelToken
             ) -> Iterator[Preview | Result]:
    """Run `work(preview)` on a worker thread; yield its live previews as they come (only
    the newest when several wait: a slow client never holds the job back), then its Result.

    Errors of the work are raised here. If the consumer stops early (the client went away,
    or gradio cancelled the event), the job is cancelled at its next step. The worker runs
    in a copy of this context, so gradio's progress tracking reaches it.
    """
    waiting: queue.Queue[tuple[str, Any]] = queue.Queue()

    def target() -> None:
        try:
            waiting.put(("done", work(lambda im, step, total: waiting.put(
                ("preview", (im, step, total))))))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            waiting.put(("error", err))

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(target,), daemon=True,
                     name="studio-job").start()
    finished = False
    try:
        while True:
            kind, value = waiting.get()
            while kind == "preview" and not waiting.empty():
                kind, value = waiting.get_nowait()
            if kind == "preview":
                yield value
                continue
            finished = True
            if kind == "error":
                raise value
            yield value
            return
    finally:
        if not finished:
            cancel.cancel()


class GenerationTab:
    """One tab's model work: widgets, Generate/Stop and the handlers, wired the same way.

    `task` is the row of the backend task table the tab runs (`studio.run(task, ...)`);
    `run=` in `handler`/`wire` replaces that for work that is not a plain task (concept
    training, regenerating a saved image).
    """

    def __init__(self, studio: Any, task: str, gallery_hook: Callable[..., None],
                 prefix: str | None = None) -> None:
        self.studio, self.task, self.gallery_hook = studio, task, gallery_hook
        self.prefix = prefix
        self.picker = None if task in NO_MODEL_TASKS else _PICKER.get()
        self.image: gr.Image | None = None
        self.info: gr.Code | None = None

    # ------------------------------------------------------------------ widgets
    def params(self, prompt_placeholder: str = "", **kw: Any) -> dict[str, Any]:
        """The common parameter widgets (prompt, seed, steps, ...) at the models' size."""
        return common_params(prompt_placeholder=prompt_placeholder, elem_prefix=self.prefix,
                             size=self.studio.native_size, **kw)

    def buttons(self, label: str = "Generate", elem: str = "generate"
                ) -> tuple[gr.Button, gr.Button]:
        """Generate and Stop; Stop cancels this session's job (running or waiting)."""
        with gr.Row():
            run = gr.Button(label, variant="primary",
                            elem_id=f"{self.prefix}-{elem}" if self.prefix else None)
            stop = gr.Button("Stop", elem_id=f"{self.prefix}-stop" if self.prefix else None)
        stop.click(stop_handler(self.studio), None, None, queue=False, **PRIVATE)
        return run, stop

    def results(self) -> tuple[gr.Image, gr.Code]:
        """The result image and info, with "Send to" for the image (see `sendto`)."""
        self.image, self.info = result_outputs(self.prefix)
        register_source(self.image, f"{self.prefix or self.task}-result")
        return self.image, self.info

    # ------------------------------------------------------------------ handlers
    def _runner(self) -> Runner:
        studio, task = self.studio, self.task
        return lambda data, progress, cancel, preview: studio.run(task, data, progress,
                                                                  cancel, preview)

    def handler(self, names: Sequence[str], *, doc: str, run: Runner | None = None,
                rename: dict[str, str] | None = None,
                to_request: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                outputs: Callable[[Result], tuple[Any, ...]] = path_and_info,
                progress_desc: str = "denoising", optional: Sequence[str] = (),
                extra_outputs: int = 0) -> Callable[..., Any]:
        """A gradio handler whose parameters are `names` (the API's, in order).

        It builds the request dict, runs the job with this session's cancel token and
        progress, streams live previews into the result image (with `{"preview": ...}` as
        info; `extra_outputs` more outputs are left as they are), shows the result's
        warnings, and ends with `outputs(result)`: what `predict()` returns. Parameters in
        `optional` default to None (API clients may leave them out).
        """
        runner = run or self._runner()
        studio, picker = self.studio, self.picker
        previews = bool(studio.settings.previews)
        unchanged = [gr.skip() for _ in range(extra_outputs)]

        def handler(*values: Any, request: gr.Request | None = None,
                    progress: gr.Progress = gr.Progress(track_tqdm=True)) -> Iterator[Any]:
            # a set of inputs arrives as one {component: value} dict, for to_request to read
            data = (dict(values[0]) if names == [AS_DICT] else
                    request_values(names, values, rename))
            data = without_left_out(data, optional)
            # the model picker's value (the trailing `model`; "" or left out = the default)
            model = data.pop(picker if names == [AS_DICT] else "model", None)
            if to_request is not None:
                data = to_request(data)
            if model:
                data["model"] = model
            report, token = progress_adapter(progress, progress_desc), job_token(studio, request)
            if not previews:
                result = runner(data, report, token, None)
            else:
                for item in streamed(lambda preview: runner(data, report, token, preview),
                                     token):
                    if isinstance(item, Result):
                        result = item
                        break
                    image, step, total = item
                    yield image, info_json({"preview": {"step": step, "steps": total}}), \
                        *unchanged
            for warning in result.info.get("warnings") or []:
                gr.Warning(warning)
            yield outputs(result)

        return _named(handler, names, doc, self.task, optional)

    def _duration(self, names: Sequence[str], handler_kw: dict[str, Any]
                  ) -> Callable[..., float]:
        """ZeroGPU's `duration` for this handler: the request's estimated GPU seconds."""
        studio, task = self.studio, self.task
        to_request = handler_kw.get("to_request")

        def duration(*values: Any, **_: Any) -> float:
            if names == [AS_DICT] or handler_kw.get("run") is not None:
                return DEFAULT_GPU_S
            try:
                data = without_left_out(
                    request_values(names, values[:len(names)], handler_kw.get("rename")),
                    handler_kw.get("optional", ()))
                return studio.estimate_seconds(task, to_request(data) if to_request else data)
            except Exception:  # noqa: BLE001 - the call itself reports a bad request
                return DEFAULT_GPU_S

        return duration

    def wire(self, on: Callable[..., Any],
             inputs: dict[str, Any] | set[Any] | Sequence[Any], *,
             doc: str, api_name: str | None = None, extra_outputs: Sequence[Any] = (),
             preprocess: bool = True, trailing: dict[str, Any] | None = None,
             **handler_kw: Any) -> Any:
        """Wire `on` (e.g. `button.click`) to a handler of `inputs` (API name -> widget),
        returning `[image, info, *extra_outputs]`; public under `api_name` if given.
        `trailing` widgets (API name -> widget: hires fix's) come after the trailing
        `model`, optional too."""
        if self.picker is not None:  # the page's model picker: the trailing `model`
            if isinstance(inputs, dict):
                inputs = {**inputs, "model": self.picker}
                handler_kw["optional"] = (*handler_kw.get("optional", ()), "model")
            elif isinstance(inputs, (set, frozenset)):
                inputs = {*inputs, self.picker}
        if trailing and isinstance(inputs, dict):
            inputs = {**inputs, **trailing}
            handler_kw["optional"] = (*handler_kw.get("optional", ()), *trailing)
        if isinstance(inputs, dict):
            names, components = list(inputs), list(inputs.values())
        elif isinstance(inputs, (set, frozenset)):  # UI-only: values come as one dict
            names, components = [AS_DICT], inputs
        else:
            components = list(inputs)
            names = [f"value_{i}" for i in range(len(components))]
        fn = spaces_gpu(user_errors(self.handler(names, doc=doc,
                                                 extra_outputs=len(extra_outputs),
                                                 **handler_kw)),
                        duration=self._duration(names, handler_kw))
        visibility = {"api_name": api_name} if api_name else PRIVATE
        event = on(fn, inputs=components,
                   outputs=[self.image, self.info, *extra_outputs], preprocess=preprocess,
                   **visibility, **gpu_kwargs())
        self.gallery_hook(event, self.image)
        return event


def _named(fn: Callable[..., Any], names: Sequence[str], doc: str, task: str,
           optional: Sequence[str] = ()) -> Callable[..., Any]:
    """Give a generated handler the signature gradio reads for the API (parameter names,
    then the injected request and progress)."""
    params, defaulted = [], False
    for n in names:
        # Python allows no required parameter after one with a default: the ones that
        # follow an optional parameter default to None too (their widgets hold a value,
        # which is what API clients get by default anyway)
        defaulted = defaulted or n in optional
        params.append(inspect.Parameter(
            n, inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=None if defaulted else inspect.Parameter.empty))
    params += [
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                          annotation=gr.Request),
        inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          default=gr.Progress(track_tqdm=True)),
    ]

    signature = inspect.Signature(params)

    def named(*args: Any, **kwargs: Any) -> Iterator[Any]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        yield from fn(*(a[n] for n in names), request=a["request"], progress=a["progress"])

    named.__signature__ = signature  # type: ignore[attr-defined]
    named.__annotations__ = {"request": gr.Request}
    named.__name__ = named.__qualname__ = task
    named.__doc__ = doc
    return named
