"""The Studio: one backend object every tab and API endpoint calls (no gradio here).

It owns the settings, the ModelRegistry, the output store and the annotators, validates each
request, resolves its seed, runs the task and saves the image with its metadata. The tasks it
runs come from one table (`studio.backend.tasks.TASKS`): each generating task there is a
method of this class (`studio.txt2img(...)`, `studio.control(...)`, ...) and can be
regenerated from a saved image.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from PIL import Image

from studio.settings import Settings

from . import cost
from .common import Cancelled, CancelToken, ProgressFn, Result, base_pipeline
from .concepts.library import ConceptManager
from .concepts.request import ConceptTrainRequest
from .concepts.seedselect import save_variants
from .concepts.store import has_concepts
from .deadline import watching
from .files import allow_root, check_file
from .history import HistoryIndex, Page
from .images import limit_decoded_pixels, load_image
from .models.builtin import builtin_choices, resolve_model_set
from .models.catalog import Catalog, UnknownModel
from .models.devices import pick_device, pick_dtype
from .models.families import get_family
from .models.modelsets import ModelSet
from .models.registry import ModelRegistry, ModelUnavailableError
from .models.speed import SpeedOptions, compiled_forward
from .outputs import OutputStore, read_metadata
from .previews import Previewer, PreviewFn, previewing
from .requests import GenerationParams, RequestError
from .tasks import TASKS, generating_tasks
from .tasks.control import annotate_image
from .tasks.inpaint import segment
from .tasks.text_mask import (
    DEFAULT_THRESHOLD,
    MAX_OBJECTS,
    layout_boxes,
    mask_from_boxes,
    text_mask,
)
from .upscalers import UpscalerLibrary

log = logging.getLogger(__name__)

DEFAULT_SIDE = 512  # the request classes' default image side (SD1.5's native size)
SIZE_FIELDS = ("width", "height", "max_side", "resolution")
STOP_MEMORY_S = 3600.0  # a Stop is remembered this long for jobs still waiting in the queue
# ZeroGPU estimate: moving the models onto the GPU, then work at a conservative rate (an
# H100-class GPU does SD1.5 at about 10 work units a second: 512x512, guided, ~20 it/s)
GPU_START_S, GPU_WORK_PER_S = 10.0, 3.0


class Studio:
    """The shared backend: every tab and API endpoint goes through one instance."""

    concurrency = 1  # jobs it runs at once (one device); the UI's GPU queue follows it

    def __init__(self, settings: Settings, model_set: ModelSet | None = None,
                 registry: ModelRegistry | None = None) -> None:
        self.settings = settings
        # the models a request gets when it names none (--models); a request may choose any
        # checkpoint of the catalog (the model picker), for the length of its job
        self.default_set = model_set or resolve_model_set(settings)
        self.catalog = Catalog(self.default_set, settings.models_dir,
                               builtins=builtin_choices(settings, self.default_set),
                               hash_cache=Path(settings.cache_dir) / "model-hashes.json")
        self._job_local = threading.local()  # the running job's model (in its thread)
        if registry is None:
            device = pick_device(settings.device)
            registry = ModelRegistry(
                self.default_set, device=device, dtype=pick_dtype(settings.dtype, device),
                budget_bytes=settings.memory_budget_bytes, offline=settings.offline,
                max_loras=settings.max_loras,
                speed=SpeedOptions.from_settings(settings, device),
                configs_dir=Path(settings.cache_dir) / "family-configs",
            )
        self.registry = registry
        limit_decoded_pixels()
        self.outputs = OutputStore(settings.outputs_dir)
        # the files a request may name by path: the studio's own outputs and concept library
        allow_root(self.outputs.root)
        allow_root(self.concepts_dir)
        self.history_index = HistoryIndex(self.outputs.root)  # opened on first use
        self._annotators = None
        self._upscalers: UpscalerLibrary | None = None
        self._no_taesd = False  # set when the preview decoder failed to load
        self._lock = threading.Lock()
        self._cancel_tokens: dict[str, CancelToken] = {}
        self._stopped_at: dict[str, float] = {}  # session -> time of its last Stop
        # One job on the device at a time, whoever sends it: gradio's GPU queue orders the
        # UI's and gradio API's jobs, and every other entry (the A1111-compatible API) waits
        # here too. Reentrant: concept training renders its preview as a job.
        self._device = threading.RLock()
        self.current_job: dict[str, Any] = {}  # the running job: task, step, total, started
        self.rate: cost.Rate | None = None  # this machine's denoiser speed, once calibrated
        self._concepts: ConceptManager | None = None
        if has_concepts(self.concepts_dir):  # concepts of earlier runs apply from the start
            _ = self.concepts  # registers the concept hook; loads no model

    # ------------------------------------------------------------------ models
    @property
    def model_set(self) -> ModelSet:
        """The running job's models (in its thread), else the default ones."""
        return getattr(self._job_local, "model_set", None) or self.default_set

    @property
    def model_name(self) -> str:
        """The running job's checkpoint name (in its thread), else the default's."""
        return getattr(self._job_local, "model", None) or self.catalog.default

    def models(self, refresh: bool = False) -> list[dict[str, str]]:
        """The checkpoints a request may choose: [{name, family, source}], default first."""
        return self.catalog.refresh() if refresh else self.catalog.listing()

    def checkpoint(self, name: Any) -> tuple[str, ModelSet]:
        """(name, model set) of the checkpoint a request names ("" or None: the default)."""
        if name is not None and not isinstance(name, str):
            raise RequestError(f"model must be a model's name (GET /models), got "
                               f"{type(name).__name__}")
        try:
            entry = self.catalog.entry(name or "")
            return entry.name, self.catalog.model_set(entry.name)
        except UnknownModel as err:
            raise RequestError(str(err)) from err
        except (FileNotFoundError, ValueError) as err:
            raise ModelUnavailableError(f"model {name!r} cannot be loaded: {err}") from err

    @contextlib.contextmanager
    def _using(self, model: str | None) -> Iterator[None]:
        """Inside the device lock: the job's checkpoint is the registry's models (components
        of others stay cached within the memory budget) and this thread's `model_set`."""
        if not model:
            yield
            return
        name, ms = self.checkpoint(model)
        local = self._job_local
        before = (getattr(local, "model", None), getattr(local, "model_set", None),
                  self.registry.model_set)
        self._job_local.model, self._job_local.model_set = name, ms
        self.registry.use(ms)
        try:
            yield
        finally:
            self._job_local.model, self._job_local.model_set = before[0], before[1]
            self.registry.use(before[2])

    # ------------------------------------------------------------------ info
    @property
    def banner(self) -> str | None:
        """Shown at the top of the UI when images come from built-in offline models."""
        if self.model_set.offline_models:
            return (
                f"Offline mode: images come from the built-in {self.model_set.name} models "
                f"({self.model_set.description}), not Stable Diffusion. Start with --models sd15 "
                "or --models sdxl on a machine with the weights for real images."
            )
        return None

    @property
    def exposure_warning(self) -> str | None:
        """Shown loudly (log and page) when anyone on the network can use this studio."""
        s = self.settings
        if not s.public or s.auth:
            return None
        where = "a public share link" if s.share else f"{s.host}:{s.port}"
        return (
            f"This studio is reachable by anyone on {where} without a login: they can use "
            "its GPU and see the shared concept library. Set --auth user:password (or "
            "STUDIO_AUTH) to require one."
        )

    def _check_history_shown(self) -> None:
        """Refuse to list the outputs where anyone may ask: every visitor's prompts."""
        s = self.settings
        if s.public and not s.auth and not s.public_history:
            raise RequestError(
                "The history is off on this public studio: it would show every visitor's "
                "images and prompts to everyone. Start it with --auth user:password (a team "
                "server), or with --public-history to share the history on purpose."
            )

    @property
    def shared_library(self) -> bool:
        """True when other people use this studio too, so they share its concept library."""
        return bool(self.settings.public)

    @property
    def native_size(self) -> int:
        """The image side the current models were trained at (the UI's default size)."""
        return int(self.model_set.native_size)

    @property
    def gligen_fraction(self) -> float:
        """The current models' default share of GLIGEN-grounded steps (the UI's default)."""
        return float(self.model_set.gligen_fraction)

    def model_defaults(self, request_cls: type, data: dict[str, Any],
                       model_set: ModelSet | None = None) -> dict[str, Any]:
        """`data` with the sizes it leaves out set to the models' native size, and the
        grounding fraction to the models' own.

        The request classes default to SD1.5's 512 px; a model set trained at another size
        (the toy world: 64 px) draws nothing useful there, so a request that names no size
        gets the one the models know, as the UI's sliders do.
        """
        ms = model_set or self.model_set
        out = dict(data)
        for f in fields(request_cls):
            if f.name in out:
                continue
            if (f.name in SIZE_FIELDS and f.default == DEFAULT_SIDE
                    and ms.native_size != DEFAULT_SIDE):
                out[f.name] = int(ms.native_size)
            elif f.name == "gligen_fraction":
                out[f.name] = float(ms.gligen_fraction)
        return out

    @property
    def annotators(self) -> Any:
        """The AnnotatorService (lazy: nothing loads until a tab first uses an annotator)."""
        if self._annotators is None:
            from .annotate import AnnotatorService

            sources = dict(self.default_set.annotators or {})
            if self.settings.detector:
                sources["grounding"] = str(self.settings.detector)
            self._annotators = AnnotatorService(
                sources, device=str(self.registry.device),
                cache_dir=None, offline=self.settings.offline, device_lock=self._device,
            )
        return self._annotators

    @property
    def upscalers(self) -> UpscalerLibrary:
        """The upscalers (built-in ones, and the models of --upscalers-dir and of the
        built-in set; a model loads on first use, onto the registry's device)."""
        if self._upscalers is None:
            folders = [Path(f) for f in (self.settings.upscalers_dir,
                                         self.default_set.upscalers_dir) if f]
            self._upscalers = UpscalerLibrary(folders, device=self.registry.device,
                                              dtype=self.registry.dtype)
        return self._upscalers

    def upscaler_names(self, latent: bool = True) -> list[str]:
        """The upscalers a request may name (`latent` too: hires fix)."""
        return self.upscalers.names(latent)

    # ------------------------------------------------------------------ tools
    # The tool endpoints: quick calls that save no image. Every caller (tabs, the gradio API,
    # the A1111 API) goes through these; the annotators hold the device lock while they run.
    def annotate(self, image: Any, annotator: str, resolution: Any = 512
                 ) -> tuple[Image.Image, dict[str, Any]]:
        """`/annotate`: a control map (Canny, depth, OpenPose, scribble) from a picture."""
        return annotate_image(self, image, annotator, resolution)

    def segment(self, image: Any, points: Any, box: Any
                ) -> tuple[Image.Image, dict[str, Any], list[Image.Image]]:
        """`/sam_mask`: SAM's mask for clicks and/or a box, its info and the candidates."""
        return segment(self, image, points, box)

    def text_mask(self, image: Any, text: Any, threshold: Any = DEFAULT_THRESHOLD
                  ) -> tuple[Image.Image, dict[str, Any]]:
        """`/text_mask`: the mask of what `text` names (detector boxes -> SAM)."""
        return text_mask(self, image, text, threshold)

    def mask_from_boxes(self, image: Any, boxes: list[Any]) -> Image.Image:
        """SAM's masks for boxes kept from a text mask, united."""
        return mask_from_boxes(self, image, boxes)

    def layout_boxes(self, image: Any, text: Any, threshold: Any = DEFAULT_THRESHOLD,
                     limit: int = MAX_OBJECTS) -> list[dict[str, Any]]:
        """What `text` names in `image`, as Layout boxes (normalised)."""
        return layout_boxes(self, image, text, threshold, limit)

    # ------------------------------------------------------------------ cancel
    def job_token(self, session: str = "default", submitted: float | None = None
                  ) -> CancelToken:
        """The cancel token of a new job of `session` (what Stop and /cancel reach).

        `submitted` is when the queue took the job (time.monotonic()); a job that waited in
        the queue while its session pressed Stop starts cancelled, so Stop stops the work the
        user asked for, not only the one that happened to be running.
        """
        budget = float(self.settings.max_job_seconds or 0)
        token = CancelToken(deadline=time.monotonic() + budget if budget else None,
                            budget_s=budget or None)
        with self._lock:
            stopped = self._stopped_at.get(session)
            if submitted is not None and stopped is not None and submitted <= stopped:
                token.cancel()
            self._cancel_tokens[session] = token
        return token

    def cancel(self, session: str = "default") -> bool:
        """Stop the running job of `session` at its next step, and the jobs it has waiting;
        True if a job was running."""
        now = time.monotonic()
        with self._lock:
            self._stopped_at[session] = now
            for old in [s for s, t in self._stopped_at.items() if now - t > STOP_MEMORY_S]:
                del self._stopped_at[old]
            token = self._cancel_tokens.get(session)
        if token is None or token.cancelled:
            return False
        token.cancel()
        return token.running

    # ------------------------------------------------------------------ tasks
    def _finish(self, req: GenerationParams, image: Any, info: dict[str, Any],
                extra: dict[str, Any] | None = None) -> Result:
        request = req.to_dict()
        model_hash = self.catalog.short_hash(self.model_name)
        path = self.outputs.save(image, request, self.model_name, extra, model_hash)
        # what the run reports first, the (long) request it ran last: the UI's info view
        # shows the top lines
        full = {
            "seed": req.seed, "task": req.task, "file": self.outputs.name_of(path),
            "model": self.model_name, "model_hash": model_hash, **info, "request": request,
        }
        return Result(image=image, info=full, path=path)

    def run(self, task: str, req: GenerationParams | dict[str, Any],
            progress: ProgressFn | None = None, cancel: CancelToken | None = None,
            preview: PreviewFn | None = None) -> Result:
        """Validate, resolve the seed, run the task's runner, save the image.

        The runner returns (PIL image, info dict); an info key "extra_images" (list of PIL)
        is moved onto the Result and "metadata" (dict) is stored in the PNG with the request.
        `preview(image, step, total)` gets live previews while the image forms (if on).
        """
        spec, req = self.prepare(task, req)
        with self.exclusive(task, progress, cancel, preview, model=req.model) as tracked:
            if cancel is not None and cancel.cancelled:
                raise Cancelled("Cancelled: the job was stopped before it started.")
            image, info = spec.runner(self, req, tracked, cancel)
            extra_images = info.pop("extra_images", [])
            metadata = info.pop("metadata", None)
            result = self._finish(req, image, info, metadata)
        result.extra_images = list(extra_images)
        return result

    def prepare(self, task: str, req: GenerationParams | dict[str, Any]
                ) -> tuple[Any, GenerationParams]:
        """(task row, request) checked and ready to run: built from a dict with the models'
        defaults, validated (input images decoded), within the job budget, seed resolved."""
        spec = TASKS.get(task)
        if spec is None or spec.runner is None or spec.request is None:
            raise RequestError(f"unknown task {task!r}")
        name, ms = self.checkpoint(req.get("model") if isinstance(req, dict) else req.model)
        self.check_family(task, ms)
        if isinstance(req, dict):
            req = spec.request.from_dict(self.model_defaults(spec.request, req, ms))
        req.model = name  # recorded: Regenerate uses the same checkpoint
        req.validate()
        req.check_upscalers(self.upscalers)
        self.check_budget(req)
        req.resolve_seed()
        return spec, req

    def family_notes(self, tab: str, family_name: str | None = None) -> list[str]:
        """Why a family (default: the current models') cannot do some of a tab's tasks
        (shown on the tab; the tasks themselves refuse with the same words)."""
        family = get_family(family_name or self.model_set.family)
        return [note for spec in TASKS.values() if spec.tab == tab and spec.request is not None
                and (note := family.refusal(spec.name))]

    def check_family(self, task: str, model_set: ModelSet | None = None) -> None:
        """Refuse, before anything loads, a task the models' family cannot do."""
        refusal = get_family((model_set or self.model_set).family).refusal(task)
        if refusal:
            raise RequestError(refusal)

    @contextlib.contextmanager
    def exclusive(self, task: str, progress: ProgressFn | None = None,
                  cancel: CancelToken | None = None, preview: PreviewFn | None = None,
                  model: str | None = None) -> Iterator[ProgressFn]:
        """Hold the device for one job (on checkpoint `model`, if given); yields a progress
        callback that also records the job's step in `current_job` (what progress endpoints
        report). With `preview`, the job's step callbacks hand it live previews (the latest
        is in current_job too). A job on another checkpoint waits here for the running one."""
        with self._device, self._using(model):
            outer = dict(self.current_job)
            job = {"task": task, "step": 0, "total": 0, "started": time.monotonic()}
            self.current_job = job

            def tracked(step: int, total: int) -> None:
                job.update(step=step, total=total)
                if progress is not None:
                    progress(step, total)

            if cancel is not None:
                cancel.running = True
            try:
                with previewing(self._previewer(job, preview)), watching(cancel):
                    yield tracked
            finally:
                self.current_job = outer
                if cancel is not None:
                    cancel.running = False

    def _previewer(self, job: dict[str, Any], preview: PreviewFn | None) -> Previewer | None:
        """The job's live previews: None when nobody watches or previews are off."""
        if preview is None or not self.settings.previews:
            return None

        def emit(image: Image.Image, step: int, total: int) -> None:
            job["preview"] = image
            preview(image, step, total)

        interval = float(self.settings.preview_interval)
        return Previewer(self._preview_decoder, emit, min_interval=interval)

    def _preview_decoder(self) -> Any:
        """The model set's TAESD, loaded on the first preview; None (previews off, logged
        once) when this set has none or it cannot be loaded."""
        if not self.model_set.get("taesd") or self._no_taesd:
            return None
        try:
            return self.registry.component("taesd")
        except Exception as err:  # noqa: BLE001 - generation must go on without previews
            self._no_taesd = True
            log.warning("live previews are off: the preview decoder could not be loaded "
                        "(%s)", err)
            return None

    def check_budget(self, req: Any) -> None:
        """Refuse a validated request whose work is over the server's per-job budget, or
        whose estimated time on this machine (once calibrated) is over its time budget."""
        limit = float(self.settings.max_job_work or 0)
        work = req.work()
        if limit and work > limit:
            raise RequestError(
                f"this job is {work:.1f} megapixel-steps ({req.task}: size, steps and "
                f"guidance passes), more than the {limit:g} this server takes per job "
                "(--max-job-work). Use fewer steps or a smaller size."
            )
        seconds = float(self.settings.max_job_seconds or 0)
        if self.rate is not None and seconds:
            megapixels = req.megapixels()
            estimate = self.rate.job_seconds(work, megapixels)
            if estimate > seconds:
                raise RequestError(
                    f"this job would take about {estimate:.0f} s on this server ({req.task} "
                    f"at {megapixels:.2f} megapixels: one pass about "
                    f"{self.rate.pass_seconds(megapixels):.1f} s), more than its limit of "
                    f"{seconds:g} s per job (--max-job-seconds). Use fewer steps or a "
                    "smaller size."
                )

    def calibrate(self) -> cost.Rate | None:
        """Measure how fast this machine runs the models' denoiser (`cost.calibrate`): from
        then on, a job estimated over --max-job-seconds is refused before it runs."""
        with self.exclusive("calibrate"):
            pipe = base_pipeline(self.registry)
            pipe.scheduler = self.registry.new_scheduler(self.registry.family.defaults.sampler)
            self.rate = cost.calibrate(pipe, self.native_size)
        log.info("calibrated: a denoiser pass takes %.3f s x MP + %.3f s x MP^2 here",
                 self.rate.linear, self.rate.quadratic)
        return self.rate

    def estimate_seconds(self, task: str, data: dict[str, Any]) -> float:
        """Seconds of GPU a request may need (ZeroGPU's per-call window), from its work at a
        conservative rate, within the per-job time budget; 60 s if it cannot be told."""
        spec = TASKS.get(task)
        cap = float(self.settings.max_job_seconds or 0) or 600.0
        try:
            req = spec.request.from_dict(self.model_defaults(spec.request, data))
            req.validate()
            seconds = GPU_START_S + req.work() / GPU_WORK_PER_S
        except Exception:  # noqa: BLE001 - a bad request fails properly inside the call
            seconds = 60.0
        return float(min(max(seconds, 15.0), cap))

    def preload(self) -> None:
        """Load the shared base components now (ZeroGPU: at start-up, outside GPU calls)."""
        base_pipeline(self.registry)

    def warm_up(self) -> float | None:
        """With --compile, compile the shared UNet now, at start-up, in one small txt2img at
        the models' native size (not saved), so the first user's request does not wait for
        it. Returns the seconds it took, or None when nothing is compiled."""
        from .requests import Txt2ImgRequest
        from .tasks.txt2img import run_txt2img

        if not self.registry.speed.compile:
            return None
        self.preload()
        wrapper = compiled_forward(self.registry.component("unet"))
        if wrapper is None:  # compile unsupported here: logged when the UNet loaded
            return None
        side = self.native_size
        req = Txt2ImgRequest(prompt="warm-up", seed=0, steps=2, width=side, height=side)
        req.validate()
        t0 = time.perf_counter()
        with self.exclusive("warm_up"):
            run_txt2img(self.registry, req)
        seconds = time.perf_counter() - t0
        if wrapper.failed:
            log.error("warm-up: the UNet could not be compiled and runs uncompiled")
        else:
            log.info("warm-up: the UNet compiled in %.1f s", seconds)
        return seconds

    def regenerate(self, payload: dict[str, Any] | str | Path | None,
                   progress: ProgressFn | None = None,
                   cancel: CancelToken | None = None,
                   preview: PreviewFn | None = None) -> Result:
        """Re-run the request stored in a saved image (or its JSON payload).

        Input files the request names are resolved inside the outputs folder only.
        """
        if payload is None:
            raise RequestError("no image: drop an image the studio saved first")
        if isinstance(payload, (str, Path)):
            _, stored = read_metadata(check_file(payload, "image"))
            if stored is None:
                raise RequestError("this image has no studio metadata to regenerate from")
            payload = stored
        request = dict(payload.get("request", payload))
        task = request.pop("task", "txt2img")
        spec = TASKS.get(task) if isinstance(task, str) else None
        if spec is None or not spec.generates or spec.request is None:
            raise RequestError(f"unknown task {task!r} in saved metadata")
        req = spec.request.from_dict(request)
        req.map_inputs(lambda value, stem: self.outputs.resolve_stored(value, stem))
        return self.run(task, req, progress, cancel, preview)

    def history(self, limit: int = 50, query: str = "", offset: int = 0
                ) -> list[dict[str, Any]]:
        """Saved images, newest first: `{file, task, prompt, seed, model, created}` each,
        `file` relative to the outputs folder, `created` ISO-8601. `query` (case-insensitive)
        matches prompt, task and model; `limit` 1..500 items from `offset`."""
        self._check_history_shown()
        return self.history_index.query(Page.checked(limit, query, offset))

    def history_listing(self, query: str, size: int, number: int
                        ) -> tuple[int, int, list[dict[str, Any]]]:
        """Page `number` of `size` saved images matching `query`, clamped to the pages there
        are: (how many match, the page number, its items as `history` gives them)."""
        self._check_history_shown()
        return self.history_index.listing(query, size, number)

    def history_file(self, name: str) -> Path:
        """The file of a history item (a name relative to the outputs folder), through the
        file gate: nothing outside the outputs folder."""
        self._check_history_shown()
        return check_file(self.outputs.resolve_stored(name, "history item"), "image")

    @staticmethod
    def sent_image(value: Any) -> Path:
        """An image one tab sends to another (a result, a gallery or Outputs item, an upload)
        through the file gate: only a file this server made or was sent, and an image; a
        file that is gone says so."""
        path = check_file(value, "image")
        load_image(path, "image")
        return path

    @staticmethod
    def png_request(image: Any) -> dict[str, Any] | None:
        """The exact request stored in a saved image (None if it has none)."""
        if image is None:
            return None
        _, payload = read_metadata(_checked(image))
        if payload is None:
            return None
        return dict(payload.get("request", payload))

    @staticmethod
    def png_info(image: Any) -> str:
        """Human-readable parameters of a saved image (A1111 text, then the JSON request)."""
        if image is None:
            return ""
        params, payload = read_metadata(_checked(image))
        if not params and payload is None:
            return "No generation parameters found in this image."
        text = params
        if payload is not None:
            text += "\n\n" + json.dumps(payload.get("request", payload), indent=2)
        return text

    # ------------------------------------------------------------------ concepts
    @property
    def concepts_dir(self) -> Path:
        """The concept library folder (--concepts-dir, default <cache_dir>/concepts)."""
        folder = self.settings.concepts_dir
        return Path(folder) if folder else Path(self.settings.cache_dir) / "concepts"

    @property
    def concepts(self) -> ConceptManager:
        """The ConceptManager (built on first use; registers its hook in registry.hooks)."""
        if self._concepts is None:
            self._concepts = ConceptManager(self.registry, self.concepts_dir)
        return self._concepts

    def concept_train(self, req: Any, progress: ProgressFn | None = None,
                      cancel: CancelToken | None = None,
                      preview: PreviewFn | None = None) -> Result:
        """Learn a concept into the library; the Result is a preview (image None if off)."""
        req = self.prepare_concept(req)
        with self.exclusive("concept_train", progress, cancel, preview,
                            model=req.model) as tracked:
            concept, training, image, image_req = self.concepts.train(req, tracked, cancel)
        extra_images = training.pop("extra_images", [])
        info: dict[str, Any] = {"concept": concept.to_dict(), "training": training}
        if image is not None:  # SeedSelect: the image of the optimised noise
            image_req.record_inputs(self.outputs.record_input)
            info["variants"] = save_variants(self, image_req, extra_images)
            result = self._finish(image_req, image, info, {"concept": concept.name})
            result.extra_images = list(extra_images)
            return result
        if not req.preview_steps:
            return Result(image=None, info=info)
        preview = self.run("txt2img", {
            "prompt": req.prompt or self.checkpoint(req.model)[1].templates[0].format(
                req.subject),
            "seed": req.seed, "model": req.model,
            "steps": req.preview_steps, "width": req.resolution, "height": req.resolution,
        }, cancel=cancel, preview=preview)
        preview.info.update(info)
        return preview

    def prepare_concept(self, req: Any) -> ConceptTrainRequest:
        """A concept-training request checked and ready: from a dict with the models'
        defaults, validated, within the job budget."""
        name, ms = self.checkpoint(req.get("model") if isinstance(req, dict) else req.model)
        self.check_family("concept_train", ms)
        if isinstance(req, dict):
            req = ConceptTrainRequest.from_dict(self.model_defaults(ConceptTrainRequest, req,
                                                                    ms))
        req.model = name
        req.validate()
        self.check_budget(req)
        return req

    def list_concepts(self) -> list[dict[str, Any]]:
        """Every concept of the library (name, token, method, files, thumbnails...)."""
        return [c.to_dict() for c in self.concepts.list()]

    def concept_thumbnails(self) -> list[tuple[Image.Image, str]]:
        """(first thumbnail, token) of every concept that has pictures, for the UI."""
        out = []
        for concept in self.concepts.list():
            thumbs = concept.thumbnails()
            if thumbs:
                with Image.open(thumbs[0]) as img:
                    out.append((img.convert("RGB"), concept.token))
        return out

    def import_concept(self, path: str | Path, name: str = "", model: str = ""
                       ) -> dict[str, Any]:
        """Import a textual-inversion embedding or LoRA file into the library, for the family
        of checkpoint `model` (the default's if empty): checking it loads uses the models, so
        it holds the device like a job."""
        name_of, _ = self.checkpoint(model)
        with self.exclusive("concept_import", model=name_of):
            return self.concepts.import_file(path, name).to_dict()


def _checked(image: Any) -> Any:
    """A client-named image file through the file gate (PIL images pass as they are)."""
    return image if isinstance(image, Image.Image) else check_file(image, "image")


def _task_method(name: str) -> Any:
    def method(self: Studio, req: GenerationParams | dict[str, Any],
               progress: ProgressFn | None = None, cancel: CancelToken | None = None,
               preview: PreviewFn | None = None) -> Result:
        return self.run(name, req, progress, cancel, preview)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Run the {name!r} task (a row of studio.backend.tasks.TASKS)."
    return method


for _task in generating_tasks():
    setattr(Studio, _task.name, _task_method(_task.name))
