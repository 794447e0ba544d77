"""The Studio: one backend object every tab and API endpoint calls (no gradio here).

It owns the settings, the ModelRegistry, the output store and the annotators, validates each
request, resolves its seed, runs the task and saves the image with its metadata.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from .common import CancelToken, ProgressFn, Result
from .modelsets import SD15, ModelSet, tiny_model_set, toy_available, toy_model_set
from .outputs import OutputStore, read_metadata
from .registry import ModelRegistry
from .requests import GenerationParams, RequestError, Txt2ImgRequest

log = logging.getLogger(__name__)

TASKS = ("txt2img", "control", "layout", "inpaint", "instruct", "seedselect")
DEFAULT_SIDE = 512  # the request classes' default image side (SD1.5's native size)
SIZE_FIELDS = ("width", "height", "max_side", "resolution")


def _sd15_available(settings: Any) -> bool:
    """True when the SD1.5 base weights are cached, or the Hub answers (and we may use it)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(SD15.base, "model_index.json")
        if isinstance(cached, str):
            return True
    except Exception:  # noqa: BLE001 - a broken cache just means "not cached"
        pass
    if settings.offline:
        return False
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(SD15.base, timeout=3)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


def resolve_model_set(settings: Any) -> ModelSet:
    """Turn `--models` into a ModelSet ("auto" falls back to built-in offline models)."""
    choice = settings.models
    if choice == "tiny":
        return tiny_model_set(settings.cache_dir)
    if choice == "toy":
        return toy_model_set(settings.cache_dir)
    if choice in ("sd15",):
        ms = SD15
    elif choice == "auto":
        if _sd15_available(settings):
            ms = SD15
        else:
            log.warning("SD1.5 weights unavailable (not cached, Hub unreachable): offline models")
            if toy_available():
                return toy_model_set(settings.cache_dir)
            return tiny_model_set(settings.cache_dir)
    else:  # a local path used as the base model
        ms = SD15.with_base(str(Path(choice).resolve()))
    if settings.base_model:
        ms = ms.with_base(settings.base_model)
    return ms


class Studio:
    """The shared backend: every tab and API endpoint goes through one instance."""

    def __init__(self, settings: Any, model_set: ModelSet | None = None,
                 registry: ModelRegistry | None = None) -> None:
        from .devices import pick_device, pick_dtype

        self.settings = settings
        self.model_set = model_set or resolve_model_set(settings)
        if registry is None:
            device = pick_device(settings.device)
            registry = ModelRegistry(
                self.model_set, device=device, dtype=pick_dtype(settings.dtype, device),
                budget_bytes=settings.memory_budget_bytes, offline=settings.offline,
            )
        self.registry = registry
        self.outputs = OutputStore(settings.outputs_dir)
        self._annotators = None
        self._lock = threading.Lock()
        self._cancel_tokens: dict[str, CancelToken] = {}
        self._concepts: Any = None
        from .concepts import has_concepts

        if has_concepts(self.concepts_dir):  # concepts of earlier runs apply from the start
            _ = self.concepts  # registers the concept hook; loads no model

    # ------------------------------------------------------------------ info
    @property
    def banner(self) -> str | None:
        """Shown at the top of the UI when images come from built-in offline models."""
        if self.model_set.offline_models:
            return (
                f"Offline mode: images come from the built-in {self.model_set.name} models "
                f"({self.model_set.description}), not Stable Diffusion. Start with --models sd15 "
                "on a machine with the weights for real images."
            )
        return None

    @property
    def native_size(self) -> int:
        """The image side the current models were trained at (the UI's default size)."""
        return int(self.model_set.native_size)

    @property
    def gligen_fraction(self) -> float:
        """The current models' default share of GLIGEN-grounded steps (the UI's default)."""
        return float(self.model_set.gligen_fraction)

    def model_defaults(self, request_cls: type, data: dict[str, Any]) -> dict[str, Any]:
        """`data` with the sizes it leaves out set to the models' native size, and the
        grounding fraction to the models' own.

        The request classes default to SD1.5's 512 px; a model set trained at another size
        (the toy world: 64 px) draws nothing useful there, so a request that names no size
        gets the one the models know, as the UI's sliders do.
        """
        out = dict(data)
        for f in fields(request_cls):
            if f.name in out:
                continue
            if (f.name in SIZE_FIELDS and f.default == DEFAULT_SIDE
                    and self.native_size != DEFAULT_SIDE):
                out[f.name] = self.native_size
            elif f.name == "gligen_fraction":
                out[f.name] = self.gligen_fraction
        return out

    @property
    def model_name(self) -> str:
        return f"{self.model_set.name}:{Path(self.model_set.base).name}"

    @property
    def annotators(self) -> Any:
        """The AnnotatorService (lazy: nothing loads until a tab first uses an annotator)."""
        if self._annotators is None:
            from .annotate import AnnotatorService

            self._annotators = AnnotatorService(
                self.model_set.annotators, device=str(self.registry.device),
                cache_dir=None, offline=self.settings.offline,
            )
        return self._annotators

    # ------------------------------------------------------------------ cancel
    def cancel_token(self, session: str = "default") -> CancelToken:
        token = CancelToken()
        with self._lock:
            self._cancel_tokens[session] = token
        return token

    def cancel(self, session: str = "default") -> bool:
        """Stop the run of `session` at its next step; True if one was running."""
        with self._lock:
            token = self._cancel_tokens.get(session)
        if token is None:
            return False
        token.cancel()
        return True

    # ------------------------------------------------------------------ tasks
    def _finish(self, req: GenerationParams, image: Any, info: dict[str, Any],
                extra: dict[str, Any] | None = None) -> Result:
        request = req.to_dict()
        path = self.outputs.save(image, request, self.model_name, extra)
        full = {
            "seed": req.seed, "task": req.task, "file": path.name, "path": str(path),
            "model": self.model_name, "request": request, **info,
        }
        return Result(image=image, info=full, path=path)

    def run_task(
        self,
        request_cls: type[GenerationParams],
        runner: Callable[..., tuple[Any, dict[str, Any]]],
        req: GenerationParams | dict[str, Any],
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
    ) -> Result:
        """Validate, resolve the seed, run `runner(studio, req, progress, cancel)`, save.

        The runner returns (PIL image, info dict); an info key "extra_images" (list of PIL)
        is moved onto the Result and "metadata" (dict) is stored in the PNG with the request.
        """
        if isinstance(req, dict):
            req = request_cls.from_dict(self.model_defaults(request_cls, req))
        req.validate()
        req.resolve_seed()
        image, info = runner(self, req, progress, cancel)
        extra_images = info.pop("extra_images", [])
        metadata = info.pop("metadata", None)
        result = self._finish(req, image, info, metadata)
        result.extra_images = list(extra_images)
        return result

    def txt2img(self, req: Txt2ImgRequest | dict[str, Any], progress: ProgressFn | None = None,
                cancel: CancelToken | None = None) -> Result:
        """Text to image."""
        from .txt2img import txt2img_runner

        return self.run_task(Txt2ImgRequest, txt2img_runner, req, progress, cancel)

    # Each later tab adds a method like txt2img above: a request class in its own backend
    # module and a runner(studio, req, progress, cancel) -> (image, info).
    def control(self, req: Any, progress: ProgressFn | None = None,
                cancel: CancelToken | None = None) -> Result:
        """ControlNet generation (sketch, pose, depth, canny units)."""
        from .control import ControlRequest, control_runner

        return self.run_task(ControlRequest, control_runner, req, progress, cancel)

    def layout(self, req: Any, progress: ProgressFn | None = None,
               cancel: CancelToken | None = None) -> Result:
        """GLIGEN box-layout generation (and regeneration inside boxes)."""
        from .layout import LayoutRequest, layout_runner

        return self.run_task(LayoutRequest, layout_runner, req, progress, cancel)

    def inpaint(self, req: Any, progress: ProgressFn | None = None,
                cancel: CancelToken | None = None) -> Result:
        """Mask-and-prompt inpainting (inpainting UNet or latent blending)."""
        from .inpaint import InpaintRequest, inpaint_runner

        return self.run_task(InpaintRequest, inpaint_runner, req, progress, cancel)

    def instruct(self, req: Any, progress: ProgressFn | None = None,
                 cancel: CancelToken | None = None) -> Result:
        """InstructPix2Pix instruction editing."""
        from .instruct import InstructRequest, instruct_runner

        return self.run_task(InstructRequest, instruct_runner, req, progress, cancel)

    def regenerate(self, payload: dict[str, Any] | str | Path) -> Result:
        """Re-run the request stored in a saved image (or its JSON payload)."""
        if isinstance(payload, (str, Path)):
            _, payload = read_metadata(payload)
            if payload is None:
                raise RequestError("this image has no studio metadata to regenerate from")
        request = dict(payload.get("request", payload))
        task = request.pop("task", "txt2img")
        if task not in TASKS:
            raise RequestError(f"unknown task {task!r} in saved metadata")
        return getattr(self, task)(request)

    def close(self) -> None:
        """Cancel runs in flight (used on shutdown and in tests)."""
        with self._lock:
            for token in self._cancel_tokens.values():
                token.cancel()

    @staticmethod
    def png_request(image: Any) -> dict[str, Any] | None:
        """The exact request stored in a saved image (None if it has none)."""
        if image is None:
            return None
        _, payload = read_metadata(image)
        if payload is None:
            return None
        return dict(payload.get("request", payload))

    @staticmethod
    def png_info(image: Any) -> str:
        """Human-readable parameters of a saved image (A1111 text, then the JSON request)."""
        if image is None:
            return ""
        params, payload = read_metadata(image)
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
        folder = getattr(self.settings, "concepts_dir", None)
        return Path(folder) if folder else Path(self.settings.cache_dir) / "concepts"

    @property
    def concepts(self) -> Any:
        """The ConceptManager (built on first use; registers its hook in registry.hooks)."""
        if self._concepts is None:
            from .concepts import ConceptManager

            self._concepts = ConceptManager(self.registry, self.concepts_dir)
        return self._concepts

    def concept_train(self, req: Any, progress: ProgressFn | None = None,
                      cancel: CancelToken | None = None) -> Result:
        """Learn a concept into the library; the Result is a preview (image None if off)."""
        from .concepts import ConceptTrainRequest

        if isinstance(req, dict):
            req = ConceptTrainRequest.from_dict(self.model_defaults(ConceptTrainRequest, req))
        concept, training, image, image_req = self.concepts.train(req, progress, cancel)
        extra_images = training.pop("extra_images", [])
        info: dict[str, Any] = {"concept": concept.to_dict(), "training": training}
        if image is not None:  # SeedSelect: the image of the optimised noise
            from .seedselect import save_variants

            info["variants"] = save_variants(self, image_req, extra_images)
            result = self._finish(image_req, image, info, {"concept": concept.name})
            result.extra_images = list(extra_images)
            return result
        if not req.preview_steps:
            return Result(image=None, info=info)
        preview = self.txt2img({
            "prompt": req.prompt or self.model_set.templates[0].format(req.subject),
            "seed": req.seed,
            "steps": req.preview_steps, "width": req.resolution, "height": req.resolution,
        }, cancel=cancel)
        preview.info.update(info)
        return preview

    def list_concepts(self) -> list[dict[str, Any]]:
        """Every concept of the library (name, token, method, files, thumbnails...)."""
        return [c.to_dict() for c in self.concepts.list()]

    def import_concept(self, path: str | Path, name: str = "") -> dict[str, Any]:
        """Import a textual-inversion embedding or LoRA file into the library."""
        return self.concepts.import_file(path, name).to_dict()

    def seedselect(self, req: Any, progress: ProgressFn | None = None,
                   cancel: CancelToken | None = None) -> Result:
        """SeedSelect: optimise the starting noise to match a few example images."""
        from .seedselect import SeedSelectRequest, seedselect_runner

        return self.run_task(SeedSelectRequest, seedselect_runner, req, progress, cancel)
