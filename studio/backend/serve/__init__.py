"""`--backend ray`: the backend as a Ray Serve deployment, many devices behind one studio.

The Gradio process keeps the UI, the queue, the outputs folder and the history; `RayStudio`
is the `Studio` it talks to. It checks every request itself (so errors are the local
backend's), decodes the input images, and sends the job to a replica
(`replica.StudioReplica`, one per device, one job at a time). Replicas stream back progress,
live previews and the result, with every file the job made as bytes; RayStudio writes those
into the outputs folder and hands the UI the same `Result` the local backend would.

Concepts live in the library folder on storage every replica sees (`--concepts-dir`); each
replica notices a change of that folder at its next request (ConceptManager's folder stamp),
so a concept learned on one replica works on all of them.

Ray is imported only here and only when this backend starts (`pip install 'ray[serve]'`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ...settings import Settings
from ..common import Cancelled, CancelToken, ProgressFn, Result, StudioError
from ..concepts.store import MAX_IMPORT_BYTES
from ..files import check_file
from ..images import load_image
from ..outputs import write_atomic
from ..previews import PreviewFn
from ..requests import GenerationParams, RequestError
from ..service import Studio
from .replica import BOARD_NAME, JobBoard, StudioReplica

log = logging.getLogger(__name__)

APP_NAME = "studio"
NAMESPACE = "controllable-studio"
LOST_REPLICA = (
    "The worker running this job stopped before it finished (its process died or its machine "
    "went away). Nothing was saved; the studio starts a new worker on its own. Run it again."
)


@dataclass(frozen=True)
class ScaleOut:
    """How many replicas: a fixed `replicas`, or autoscaling between min and max."""

    replicas: int = 1
    min_replicas: int = 0
    max_replicas: int = 0  # 0 = no autoscaling
    address: str | None = None  # an existing cluster ("auto", "ray://host:10001"); None = local
    threads: int = 0  # torch threads per CPU replica; 0 = the cores shared out

    @property
    def most(self) -> int:
        return self.max_replicas or self.replicas

    @classmethod
    def from_settings(cls, settings: Settings) -> ScaleOut:
        return cls(replicas=int(settings.replicas or 1),
                   min_replicas=int(settings.min_replicas or 0),
                   max_replicas=int(settings.max_replicas or 0),
                   address=settings.ray_address or None,
                   threads=int(settings.replica_threads or 0))


def deployment_options(scale: ScaleOut, gpus: float) -> dict[str, Any]:
    """Serve options: one job per replica, one GPU each where the cluster has GPUs."""
    actor = {"num_gpus": 1, "num_cpus": 1} if gpus >= 1 else {"num_cpus": 1}
    opts: dict[str, Any] = {"max_ongoing_requests": 1, "ray_actor_options": actor,
                            "health_check_period_s": 2.0, "health_check_timeout_s": 30.0,
                            "graceful_shutdown_timeout_s": 5.0}
    if scale.max_replicas:
        opts["autoscaling_config"] = {
            "min_replicas": scale.min_replicas, "max_replicas": scale.max_replicas,
            "target_ongoing_requests": 1, "upscale_delay_s": 2.0, "downscale_delay_s": 120.0}
    else:
        opts["num_replicas"] = scale.replicas
    return opts


class RayStudio(Studio):
    """The Studio of the Gradio process when the work runs on Ray Serve replicas."""

    def __init__(self, settings: Settings, scale: ScaleOut | None = None, **kwargs: Any) -> None:
        import ray
        from ray import serve

        super().__init__(settings, **kwargs)  # loads no model: the registry stays empty here
        self.scale = scale or ScaleOut.from_settings(settings)
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            init: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False,
                                    "include_dashboard": False}
            if self.scale.address:
                init["address"] = self.scale.address
            else:  # a local cluster: a CPU for each replica even on a small machine
                init["num_cpus"] = max(os.cpu_count() or 1, self.scale.most)
            ray.init(**init)
        gpus = float(ray.cluster_resources().get("GPU", 0))
        threads = self.scale.threads
        if not threads and gpus < 1:
            threads = max(1, (os.cpu_count() or 1) // self.scale.most)
        self._board = ray.remote(num_cpus=0)(JobBoard).options(
            name=BOARD_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
        ).remote()
        serve.start(proxy_location="Disabled")
        deployment = serve.deployment(StudioReplica, name="StudioReplica",
                                      **deployment_options(self.scale, gpus))
        app = deployment.bind(settings, str(self.outputs.root), threads, NAMESPACE)
        log.info("starting %s studio replica(s) on Ray (%s)", self.scale.most,
                 f"{gpus:g} GPUs" if gpus else f"CPU, {threads} torch threads each")
        self.handle = serve.run(app, name=APP_NAME, route_prefix=None)
        # One job in flight per replica: the rest wait here, in order, and each goes out the
        # moment a replica is free (Serve's router would hold them and retry with back-off)
        self._slots = threading.Semaphore(self.scale.most)
        self._flight_lock = threading.Lock()
        self.in_flight = 0  # jobs on the replicas now

    @property
    def concurrency(self) -> int:  # type: ignore[override]
        """Jobs at once: one per replica (the UI's GPU queue follows it)."""
        return self.scale.most

    def close(self) -> None:
        """Remove the deployment; stop the local Ray cluster if this studio started it."""
        import ray
        from ray import serve

        try:
            serve.delete(APP_NAME)
            serve.shutdown()
        finally:
            if self._started_ray:
                ray.shutdown()

    # ------------------------------------------------------------------ jobs
    def run(self, task: str, req: GenerationParams | dict[str, Any],
            progress: ProgressFn | None = None, cancel: CancelToken | None = None,
            preview: PreviewFn | None = None) -> Result:
        """As `Studio.run`, on a replica: checked here, run there, saved here."""
        _, req = self.prepare(task, req)
        req.map_inputs(_decoded)
        return self._job(task, "run", (task, req), progress, cancel, preview)

    def concept_train(self, req: Any, progress: ProgressFn | None = None,
                      cancel: CancelToken | None = None,
                      preview: PreviewFn | None = None) -> Result:
        """As `Studio.concept_train`, on a replica (the library is on shared storage)."""
        req = self.prepare_concept(req)
        req.images = [load_image(v, f"image {i}") for i, v in enumerate(req.images, 1)]
        return self._job("concept_train", "concept_train", (req,), progress, cancel, preview)

    def import_concept(self, path: str | Path, name: str = "", model: str = ""
                       ) -> dict[str, Any]:
        """Import a weights file through a replica (it checks the file against the models
        of checkpoint `model`)."""
        path = check_file(path, "file", max_bytes=MAX_IMPORT_BYTES)
        model = self.checkpoint(model)[0]
        return self._quick(self.handle.import_concept.remote(
            Path(path).read_bytes(), Path(path).name, name, model))

    @property
    def annotators(self) -> Any:
        """The annotators, run on a replica (where the device is)."""
        return RemoteAnnotators(self)

    def preload(self) -> None:
        """Nothing to load here: each replica loads its models on its first job."""

    def calibrate(self) -> None:
        """Nothing to time here (the models are on the replicas): jobs are held to the time
        budget by the deadline inside each step on the replica."""

    def warm_up(self) -> float | None:
        """With --compile, each replica compiles on its first job (a warm-up here would
        reach only one of them)."""
        return None

    def _quick(self, response: Any) -> Any:
        if _in_event_loop():
            return _off_loop(self._quick, response)
        try:
            return response.result()
        except Exception as err:  # noqa: BLE001 - Ray wraps the replica's own error
            raise _unwrapped(err) from None

    def _job(self, task: str, method: str, args: tuple, progress: ProgressFn | None,
             cancel: CancelToken | None, preview: PreviewFn | None) -> Result:
        if _in_event_loop():  # Serve's handles block only outside one: wait in a thread
            return _off_loop(self._job, task, method, args, progress, cancel, preview)
        while not self._slots.acquire(timeout=0.05):
            if cancel is not None and cancel.cancelled:
                break
        else:
            with self._flight_lock:
                self.in_flight += 1
            try:
                return self._stream(task, method, args, progress, cancel, preview)
            finally:
                with self._flight_lock:
                    self.in_flight -= 1
                self._slots.release()
        raise Cancelled("Cancelled: the job was stopped before it started.")

    def _stream(self, task: str, method: str, args: tuple, progress: ProgressFn | None,
                cancel: CancelToken | None, preview: PreviewFn | None) -> Result:
        if cancel is not None and cancel.cancelled:
            raise Cancelled("Cancelled: the job was stopped before it started.")
        job_id = uuid.uuid4().hex
        budget = None  # the job's time budget: what is left of it, and the server's
        if cancel is not None and cancel.deadline is not None:
            budget = (max(0.001, cancel.deadline - time.monotonic()),
                      float(cancel.budget_s or 0))
        want_previews = preview is not None and bool(self.settings.previews)
        stream = self.handle.options(stream=True).stream.remote(
            method, args, job_id, budget, want_previews)
        job = {"task": task, "step": 0, "total": 0, "started": time.monotonic()}
        done = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(cancel, job_id, done),
                                   daemon=True) if cancel is not None else None
        if watcher is not None:
            watcher.start()
        try:
            for event in _events(stream):
                kind = event[0]
                if kind == "started":
                    job["replica"] = event[1]
                    self.current_job = job
                    if cancel is not None:
                        cancel.running = True
                elif kind == "progress":
                    job.update(step=event[1], total=event[2])
                    if progress is not None:
                        progress(event[1], event[2])
                elif kind == "preview":
                    job["preview"] = event[1]
                    if preview is not None:
                        preview(*event[1:])
                elif kind == "error":
                    raise event[1]
                elif kind == "result":
                    return self._saved(event[1])
            raise StudioError(LOST_REPLICA)
        finally:
            done.set()
            if cancel is not None:
                cancel.running = False
            if self.current_job is job:
                self.current_job = {}

    def _watch(self, cancel: CancelToken, job_id: str, done: threading.Event) -> None:
        """Pass a Stop on to the replica running the job (through the job board)."""
        while not done.wait(0.05):
            if cancel.event.is_set():
                self._board.stop.remote(job_id)
                return

    def _saved(self, payload: dict[str, Any]) -> Result:
        """Write a finished job's files into the outputs folder; its Result, as if local."""
        root = self.outputs.root
        for name, data in payload["files"].items():
            path = _inside(root, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, lambda fh, data=data: fh.write(data))
        name = payload["name"]
        result = Result(image=payload["image"], info=payload["info"],
                        path=_inside(root, name) if name else None)
        result.extra_images = list(payload["extra_images"])
        return result


class RemoteAnnotators:
    """`studio.annotators` of the front: each call runs on a replica."""

    def __init__(self, studio: RayStudio) -> None:
        self._studio = studio

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            studio = self._studio
            return studio._quick(studio.handle.call.remote("annotators", method, args, kwargs))

        return call


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _off_loop(fn: Any, *args: Any) -> Any:
    """`fn(*args)` in a helper thread, waited for (a caller inside an asyncio loop, e.g. an
    async route or a Playwright script, may not block on a Serve response itself)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-call") as pool:
        return pool.submit(fn, *args).result()


def _decoded(value: Any, stem: str) -> Any:
    """An input image as pixels, not a file name (a replica cannot open the front's files)."""
    if isinstance(value, (str, Path)):
        return load_image(value, stem)
    return value


def _inside(root: Path, name: str) -> Path:
    """A file name a replica gave, as a path inside the outputs folder (nothing else)."""
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise StudioError(f"a replica named an output file outside the outputs folder: {name!r}")
    return root.joinpath(*rel.parts)


def _events(stream: Any) -> Any:
    """The replica's events; a lost replica becomes a clear StudioError."""
    try:
        yield from stream
    except Exception as err:  # noqa: BLE001 - Ray's errors for a dead or lost replica
        raise _unwrapped(err) from None


def _unwrapped(err: BaseException) -> BaseException:
    """The replica's own error out of Ray's wrapper; a lost replica's as LOST_REPLICA."""
    import ray.exceptions as rex

    if isinstance(err, rex.RayTaskError):
        cause = getattr(err, "cause", None)
        if isinstance(cause, BaseException) and not isinstance(cause, rex.RayError):
            return cause
    if isinstance(err, (RequestError, StudioError)):
        return err
    if isinstance(err, rex.RayError) or type(err).__module__.startswith("ray."):
        log.warning("a replica was lost during a job: %s", err)
        return StudioError(LOST_REPLICA)
    return err
