"""AUTOMATIC1111's REST API (`/sdapi/v1/...`, ControlNet's `/controlnet/...`) on the studio.

Existing clients (Open WebUI, SillyTavern, Krita/Photoshop plugins, the `webuiapi` package)
use the studio unchanged. Every job goes through the same Studio, so the same validation,
budgets, file rules and models apply, and it waits for the device like any other job (the
Studio holds one job on the device at a time). Outputs are saved with the same metadata.

Routes are FastAPI routes served by gradio's own app (passed to it at launch). With
`--api-auth user:pass` they require HTTP basic auth, as A1111's `--api-auth` does; when the
studio is public and has no API login they answer 403, unless `--a1111-api-public` says that
is intended.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from PIL import Image

from studio.backend.common import Cancelled, StudioError
from studio.backend.images import load_image
from studio.backend.models.registry import DeviceMemoryError, ModelUnavailableError
from studio.backend.outputs import read_metadata
from studio.backend.requests import RequestError
from studio.backend.tasks.control import MAX_UNITS
from studio.settings import Settings

from . import a1111_map as m

log = logging.getLogger(__name__)

# Each job sent through this API gets its own cancel session, an unguessable name: a gradio
# client chooses its session name freely, so a fixed one would let anyone stop these jobs.
# Only this API's /interrupt (behind its credentials) reaches them.
SESSION_PREFIX = "a1111-"
# Where this API's guarded routes live: the request middleware (`studio.api.limits`, which
# serves these routes with it) checks `A1111Api.access_refusal` on them before any body is
# read, the one place access is decided.
ROUTE_PREFIXES = ("/sdapi/", "/controlnet/")
USER_ERRORS = (RequestError, StudioError, ModelUnavailableError, DeviceMemoryError)


def memory() -> dict[str, Any]:
    """A1111's /sdapi/v1/memory: this process's RAM and the GPU's, where there is one."""
    import resource

    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out: dict[str, Any] = {"ram": {"used": rss}}
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        out["cuda"] = {"system": {"free": free, "used": total - free, "total": total}}
    else:
        out["cuda"] = {"error": "no CUDA device"}
    return out




class A1111Api:
    """The routes, bound to one Studio and its settings."""

    def __init__(self, studio: Any, settings: Settings) -> None:
        self.studio, self.settings = studio, settings
        self.max_bytes = int(settings.max_file_mb * 1024 * 1024)
        self.jobs_done = 0
        # set by POST /options: the API's checkpoint ("" = the studio's default) and clip skip
        self.api_settings: dict[str, Any] = {"clip_skip": 1, "model": ""}
        self._sessions: set[str] = set()  # the cancel sessions of this API's running jobs
        self._sessions_lock = threading.Lock()

    # ------------------------------------------------------------------ access
    def access_refusal(self, headers: Mapping[str, str]
                       ) -> tuple[int, str, dict[str, str]] | None:
        """(status, message, headers) refusing a request to this API from its headers alone
        (the request middleware asks before the body is read), or None to let it in. As in
        A1111, no credential is looked at unless --api-auth is set: clients that always
        send `Authorization: Basic ` with an empty field (SillyTavern, Open WebUI) get in."""
        auth = self.settings.api_auth
        if auth:
            user, _, password = auth.partition(":")
            scheme, _, encoded = headers.get("authorization", "").partition(" ")
            try:
                given = base64.b64decode(encoded.strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                given = ""
            name, sep, secret = given.partition(":")
            ok = scheme.lower() == "basic" and bool(sep) and secrets.compare_digest(
                name, user) and secrets.compare_digest(secret, password)
            if not ok:
                return 401, "the A1111 API needs the --api-auth login", {
                    "WWW-Authenticate": "Basic"}
        elif self.settings.public and not self.settings.a1111_api_public:
            return 403, ("this studio is public: its A1111 API needs a login (--api-auth "
                         "user:pass) or --a1111-api-public"), {}
        return None

    def routes(self) -> list[Any]:
        """The API's routes (for gradio's app, ahead of its own)."""
        router = APIRouter()
        get, post = router.get, router.post
        get("/sdapi/v1/samplers")(lambda: m.sampler_list())
        get("/sdapi/v1/schedulers")(lambda: [
            {"name": name, "label": name.replace("_", " ").title(), "aliases": None}
            for name in m.SCHEDULE_NAMES])
        get("/sdapi/v1/sd-models")(self.sd_models)
        get("/sdapi/v1/options")(self.options)
        post("/sdapi/v1/options")(self.set_options)
        get("/sdapi/v1/progress")(self.progress)
        post("/sdapi/v1/interrupt")(self.interrupt)
        get("/sdapi/v1/embeddings")(self.embeddings)
        get("/sdapi/v1/loras")(self.loras)
        get("/sdapi/v1/scripts")(lambda: {"txt2img": [], "img2img": []})
        post("/sdapi/v1/png-info")(self.png_info)
        post("/sdapi/v1/txt2img")(self.txt2img)
        post("/sdapi/v1/img2img")(self.img2img)
        get("/sdapi/v1/upscalers")(self.upscalers)
        get("/sdapi/v1/latent-upscale-modes")(lambda: [{"name": "Latent"}])
        post("/sdapi/v1/extra-single-image")(self.extra_single_image)
        # what clients read to draw their menus; the studio has none of these things
        for route in ("sd-vae", "sd-modules", "prompt-styles", "hypernetworks",
                      "face-restorers", "realesrgan-models"):
            get(f"/sdapi/v1/{route}")(lambda: [])
        post("/sdapi/v1/refresh-checkpoints")(lambda: None)
        post("/sdapi/v1/refresh-loras")(lambda: None)
        get("/sdapi/v1/cmd-flags")(lambda: {"api": True, "api_auth": bool(
            self.settings.api_auth), "nowebui": False, "listen": bool(self.settings.public)})
        get("/sdapi/v1/memory")(memory)
        get("/internal/ping")(lambda: {})
        get("/controlnet/version")(lambda: {"version": 2})
        get("/controlnet/model_list")(self.model_list)
        get("/controlnet/module_list")(m.module_list)
        get("/controlnet/control_types")(lambda: m.control_types(self._model_set()))
        get("/controlnet/settings")(lambda: {"control_net_unit_count": MAX_UNITS})
        post("/controlnet/detect")(self.detect)
        return list(router.routes)

    # ------------------------------------------------------------------ generation
    @contextlib.contextmanager
    def _job(self) -> Iterator[Any]:
        """The cancel token of one API job, in this API's running sessions meanwhile (what
        /interrupt stops)."""
        session = SESSION_PREFIX + secrets.token_hex(16)
        cancel = self.studio.job_token(session)
        with self._sessions_lock:
            self._sessions.add(session)
        try:
            yield cancel
        finally:
            with self._sessions_lock:
                self._sessions.discard(session)

    def _generate(self, plan: m.Plan, payload: dict[str, Any]) -> JSONResponse:
        """Run every image of the plan, in order, and answer in A1111's shape."""
        studio, images, infotexts, seeds, files = self.studio, [], [], [], []
        detected: list[Image.Image] = []
        latest: dict[str, Image.Image] = {}

        def keep(image: Image.Image, step: int, total: int) -> None:
            # the Studio keeps it in the job's state too (/progress's current_image)
            latest["image"] = image

        try:
            with self._job() as cancel:
                for request in plan.requests:
                    latest.clear()
                    result = studio.run(plan.task, request, cancel=cancel,
                                        preview=keep if studio.settings.previews else None)
                    text = m.infotext(request, result.info, result.info.get("model", ""))
                    images.append(m.encode_png(result.image, text))
                    infotexts.append(text)
                    seeds.append(result.info["seed"])
                    files.append(result.info["file"])
                    # as the ControlNet extension: the maps its preprocessors made follow the
                    # images (once per request)
                    detected = [cmap for unit, cmap in zip(request.get("units") or [],
                                                           result.extra_images, strict=False)
                                if unit.get("preprocess")]
        except Cancelled:
            # as A1111: 200 with what there is; an image interrupted mid-way is its latest
            # live preview (none with --no-previews)
            if "image" in latest:
                images.append(m.encode_png(latest["image"]))
                infotexts.append("interrupted")
                seeds.append(plan.requests[len(seeds)].get("seed", -1))
        images += [m.encode_png(cmap) for cmap in detected]
        self.jobs_done += 1
        first = plan.requests[0]
        info = {
            "prompt": first.get("prompt", ""), "all_prompts": [r.get("prompt", "")
                                                              for r in plan.requests],
            "negative_prompt": first.get("negative_prompt", ""),
            "seed": seeds[0] if seeds else -1, "all_seeds": seeds, "subseed": -1,
            "all_subseeds": [-1] * len(seeds),
            "width": payload.get("width", 512), "height": payload.get("height", 512),
            "sampler_name": payload.get("sampler_name") or "Euler a",
            "cfg_scale": payload.get("cfg_scale", 7.0), "steps": payload.get("steps", 20),
            "batch_size": payload.get("batch_size", 1),
            "sd_model_name": plan.requests[0].get("model") or self.model,
            "denoising_strength": payload.get("denoising_strength"),
            "infotexts": infotexts, "index_of_first_image": 0, "studio_task": plan.task,
            "studio_files": files, "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        }
        return JSONResponse({"images": images, "parameters": _echo(payload),
                             "info": json.dumps(info)})

    def _settings(self, payload: dict[str, Any]) -> dict[str, Any]:
        return m.settings_for(payload, self.api_settings, self._checkpoint)

    def _checkpoint(self, value: Any) -> str:
        """The catalog name an A1111 title or name means; others are refused with the list."""
        names = self.studio.catalog.names()
        found = m.match_checkpoint(value, names)
        if found is None:
            raise RequestError(f"sd_model_checkpoint {value!r} is not a model of this server; "
                               f"it has: {', '.join(self._title(n) for n in names)}")
        return found

    def _title(self, name: str) -> str:
        return m.checkpoint_title(name, self.studio.catalog.short_hash(name))

    @property
    def model(self) -> str:
        """The API's checkpoint: POST /options's, else the studio's default."""
        return self.api_settings.get("model") or self.studio.catalog.default

    def txt2img(self, payload: dict[str, Any]) -> JSONResponse:
        return self._safely(lambda: self._generate(*self._plan(m.txt2img_plan, payload)))

    def img2img(self, payload: dict[str, Any]) -> JSONResponse:
        return self._safely(lambda: self._generate(*self._plan(m.img2img_plan, payload)))

    def _plan(self, planner: Callable[..., m.Plan], payload: dict[str, Any]
              ) -> tuple[m.Plan, dict[str, Any]]:
        settings = self._settings(payload)
        model_set = self.studio.checkpoint(settings.get("model") or self.model)[1]
        return planner(payload, model_set, self.max_bytes, settings), payload

    def _model_set(self) -> Any:
        return self.studio.checkpoint(self.model)[1]

    def upscalers(self) -> list[dict[str, Any]]:
        """A1111's upscaler list: the built-in pixel ones under A1111's names, then each
        model by name (no server path: `model_path` is null)."""
        library = self.studio.upscalers
        out = [{"name": name, "model_name": None, "model_path": None, "model_url": None,
                "scale": 4} for name in m.A1111_PIXEL_UPSCALERS]
        for name in library.model_names():
            out.append({"name": name, "model_name": name, "model_path": None,
                        "model_url": None, "scale": library.scale_hint(name)})
        return out

    def extra_single_image(self, payload: dict[str, Any]) -> JSONResponse:
        """A1111's Extras for one image: the studio's `upscale` task (device lock, budget,
        saved output), answered as `{"image", "html_info"}`."""

        def run() -> JSONResponse:
            request = m.extras_request(payload, self.max_bytes)
            with self._job() as cancel:
                result = self.studio.run("upscale", request, cancel=cancel)
            text = m.infotext(request, result.info, "")
            return JSONResponse({"image": m.encode_png(result.image, text),
                                 "html_info": f"<p>{html.escape(text)}</p>"})

        return self._safely(run)

    def detect(self, payload: dict[str, Any]) -> JSONResponse:
        """ControlNet's preprocessor preview: run an annotator on each image."""

        def run() -> JSONResponse:
            module = payload.get("controlnet_module", "none")
            if module not in m.MODULES or m.MODULES[module] is None:
                raise RequestError(f"controlnet_module {module!r} is not available here; use "
                                   "one of canny, depth_midas, openpose, scribble")
            images = payload.get("controlnet_input_images") or payload.get(
                "controlnet_images") or []
            if not images or len(images) > m.MAX_IMAGES:
                raise RequestError(f"send 1 to {m.MAX_IMAGES} controlnet_input_images")
            resolution = m._resolution(payload.get("controlnet_processor_res", 512))
            out = []
            for i, value in enumerate(images):
                image = m.decode_image(value, f"controlnet_input_images[{i}]", self.max_bytes)
                with self.studio.exclusive("detect"):
                    cmap, _ = self.studio.annotate(image, m.MODULES[module], resolution)
                out.append(m.encode_png(cmap))
            return JSONResponse({"images": out, "info": "Success"})

        return self._safely(run)

    # ------------------------------------------------------------------ state
    def progress(self) -> dict[str, Any]:
        job = dict(self.studio.current_job)
        step, total = job.get("step", 0), job.get("total", 0)
        done = step / total if total else 0.0
        elapsed = time.monotonic() - job["started"] if job else 0.0
        eta = elapsed / done - elapsed if done else None
        return {"progress": round(done, 4), "eta_relative": eta and round(eta, 2),
                "state": {"skipped": False, "interrupted": False, "job": job.get("task", ""),
                          "job_count": 1 if job else 0, "job_no": self.jobs_done,
                          "sampling_step": step, "sampling_steps": total,
                          "job_timestamp": time.strftime("%Y%m%d%H%M%S")},
                "current_image": m.encode_png(job["preview"]) if job.get("preview") else None,
                "textinfo": None}

    def interrupt(self) -> dict[str, Any]:
        """Stop the jobs sent through this API at their next step (UI jobs are not touched;
        as in A1111, it names no job)."""
        with self._sessions_lock:
            sessions = list(self._sessions)
        stopped = [self.studio.cancel(s) for s in sessions]
        return {"interrupted": any(stopped)}

    def sd_models(self) -> list[dict[str, Any]]:
        """Every checkpoint of the catalog, as A1111 lists them (the file name is the name:
        never a server path)."""
        out = []
        for entry in self.studio.models():
            name = entry["name"]
            digest = self.studio.catalog.short_hash(name)
            out.append({"title": m.checkpoint_title(name, digest),
                        "model_name": name.rsplit(".", 1)[0] if entry["source"] == "file"
                        else name, "hash": digest, "sha256": None, "filename": name,
                        "config": None})
        return out

    def options(self) -> dict[str, Any]:
        digest = self.studio.catalog.short_hash(self.model)
        return {"sd_model_checkpoint": self._title(self.model), "samples_format": "png",
                "sd_checkpoint_hash": digest, "sd_vae": "Automatic",
                "CLIP_stop_at_last_layers": self.api_settings["clip_skip"]}

    def set_options(self, payload: dict[str, Any]) -> Any:
        """As A1111: the keys this studio acts on take effect for the API's later requests
        (the checkpoint, by title or name; the clip skip) or are refused by name when it
        cannot honour their value (a VAE), and every other key is ignored with a log line
        (clients send back what GET /options gave them, and settings of their own). A job
        running on another checkpoint finishes first: the next one waits for the device."""
        try:
            chosen = m.settings_for({"override_settings": payload}, self.api_settings,
                                    self._checkpoint)
        except RequestError as err:
            return _error(422, str(err).replace("override_settings.", ""))
        self.api_settings = chosen
        return None

    def embeddings(self) -> dict[str, Any]:
        loaded = {c["token"]: {"step": None, "sd_checkpoint": None,
                               "sd_checkpoint_name": None, "shape": None,
                               "vectors": c.get("vectors", 1)}
                  for c in self.studio.list_concepts() if c["method"] == "textual_inversion"}
        return {"loaded": loaded, "skipped": {}}

    def loras(self) -> list[dict[str, Any]]:
        return [{"name": c["name"], "alias": c["token"], "path": c["files"].get("lora", ""),
                 "metadata": {}} for c in self.studio.list_concepts() if c["method"] == "lora"]

    def model_list(self) -> dict[str, Any]:
        return {"model_list": sorted(m.model_names(self._model_set()))}

    def png_info(self, payload: dict[str, Any]) -> JSONResponse:
        def run() -> JSONResponse:
            value = payload.get("image")
            if not isinstance(value, str) or not value:
                raise RequestError("image must be a base64-encoded PNG")
            raw = base64.b64decode(value.split(",", 1)[-1], validate=False)
            load_image(raw, "image")  # a real image, within the size limits
            params, stored = read_metadata(raw)
            items = {"parameters": params} if params else {}
            if stored is not None:
                items["studio_request"] = json.dumps(stored)
            return JSONResponse({"info": params, "items": items,
                                 "parameters": (stored or {}).get("request", {})})

        return self._safely(run)

    # ------------------------------------------------------------------ errors
    def _safely(self, fn: Callable[[], JSONResponse]) -> JSONResponse:
        """A1111-style JSON errors: 422 with `detail` for bad requests; an id for the rest."""
        try:
            return fn()
        except Cancelled as err:
            return _error(422, str(err))
        except USER_ERRORS as err:
            return _error(422, str(err))
        except Exception:
            error_id = uuid.uuid4().hex[:8]
            log.exception("unexpected error %s in the A1111 API", error_id)
            return _error(500, f"Internal error (id {error_id}); details in the server log")


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"error": "HTTPException" if status == 422 else "Error",
                         "detail": detail, "errors": detail}, status_code=status)


def _echo(payload: dict[str, Any]) -> dict[str, Any]:
    """The request's parameters, without its (large) images."""
    out = {}
    for key, value in payload.items():
        if key in ("init_images", "mask"):
            out[key] = None
        elif key == "alwayson_scripts":
            out[key] = {}
        else:
            out[key] = value
    return out

