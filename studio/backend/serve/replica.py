"""The replica side of `--backend ray`: one `Studio` per Ray Serve replica, one device each.

A replica runs the same `Studio` as the local backend (same registry, runners, annotators),
so an image is the same bit for bit. What differs is where files go: the replica names every
output as the front process's store would (`BufferedOutputs`) and hands the bytes back with
the result; the front writes them into the outputs folder the UI serves. The replica never
opens a file a client named: the front decodes every input image before a request leaves it.

A job is a stream of events (Ray Serve streaming responses), so progress and live previews
reach the front while the job runs:
    ("started", pid) ("progress", step, total) ("preview", image, step, total)
    ("result", payload) | ("error", exception)
Stop reaches a running job through the `JobBoard` actor, which every replica polls.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from ...settings import Settings
from ..common import CancelToken, Result, StudioError
from ..files import allow_root
from ..outputs import OutputStore

log = logging.getLogger(__name__)

BOARD_NAME = "studio-job-board"  # the named actor holding which jobs were stopped
POLL_S = 0.1  # how often a running job looks at the board and sends its latest step
BOARD_TTL_S = 3600.0  # a stop is forgotten after this long


class BufferedOutputs(OutputStore):
    """An OutputStore that names files under the front's outputs folder and keeps their
    bytes for the front to write (a replica may run on another machine)."""

    def __init__(self, front_root: str | Path) -> None:
        super().__init__(Path(front_root))
        self._root = Path(front_root)
        self.files: dict[str, bytes] = {}
        self._scratch = Path(tempfile.mkdtemp(prefix="studio-replica-"))

    @property
    def root(self) -> Path:
        return self._root

    def _day(self) -> Path:
        return self._root / time.strftime("%Y-%m-%d")

    def name_of(self, path: str | Path) -> str:
        return PurePosixPath(Path(path).relative_to(self._root)).as_posix()

    def _write(self, path: Path, write: Callable[[BinaryIO], None]) -> Path:
        buf = io.BytesIO()
        write(buf)
        with self._lock:
            self.files[self.name_of(path)] = buf.getvalue()
        return path

    def save_file(self, stem: str, suffix: str, write: Callable[[Path], None]) -> Path:
        final = self._day() / f"{time.strftime('%H%M%S')}-{stem}-{os.urandom(16).hex()}{suffix}"
        tmp = self._scratch / final.name
        try:
            write(tmp)
            with self._lock:
                self.files[self.name_of(final)] = tmp.read_bytes()
        finally:
            tmp.unlink(missing_ok=True)
        return final

    def take(self) -> dict[str, bytes]:
        """The files made since the last call (name relative to the outputs folder -> bytes)."""
        with self._lock:
            files, self.files = self.files, {}
        return files


class JobBoard:
    """Which jobs were stopped (a tiny named Ray actor shared by the front and replicas)."""

    def __init__(self) -> None:
        self._stopped: dict[str, float] = {}

    def stop(self, job_id: str) -> None:
        now = time.monotonic()
        self._stopped = {j: t for j, t in self._stopped.items() if now - t < BOARD_TTL_S}
        self._stopped[job_id] = now

    def stopped(self, job_id: str) -> bool:
        return job_id in self._stopped


def portable_error(err: BaseException) -> BaseException:
    """`err` if it survives pickling (our own errors do), else a StudioError with its text."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - any unpicklable exception is reported as text
        return StudioError(f"{type(err).__name__}: {err}")


class StudioReplica:
    """What a Serve replica runs: a Studio whose outputs go back to the front as bytes."""

    def __init__(self, settings: Settings, front_root: str, threads: int = 0,
                 namespace: str | None = None) -> None:
        import ray
        import torch

        from ..service import Studio

        if threads:
            torch.set_num_threads(int(threads))
        # the replica's own folder is never served; its Studio's outputs are buffered
        local = replace(settings, outputs_dir=Path(tempfile.mkdtemp(prefix="studio-out-")))
        self.studio = Studio(local)
        self.studio.outputs = BufferedOutputs(front_root)
        # the library's hook from the start: a concept another replica learns later is
        # picked up at the next request (the manager rereads the folder when it changes)
        _ = self.studio.concepts
        # where imported weights files land: the one folder of its own the replica opens
        self._imports = Path(tempfile.mkdtemp(prefix="studio-import-"))
        allow_root(self._imports)
        self.board = ray.get_actor(BOARD_NAME, namespace=namespace)
        log.info("studio replica %d ready (%s, %d torch threads)", os.getpid(),
                 self.studio.registry.device, torch.get_num_threads())

    def pid(self) -> int:
        return os.getpid()

    def stream(self, method: str, args: tuple, job_id: str,
               budget: tuple[float, float] | None, previews: bool) -> Iterator[tuple]:
        """Run `Studio.<method>(*args)` (run, concept_train) as a stream of events.

        `budget` is (seconds the job has left, the server's per-job budget) or None."""
        events: queue.Queue = queue.Queue()
        token = CancelToken(deadline=time.monotonic() + budget[0] if budget else None,
                            budget_s=budget[1] if budget else None)

        def work() -> None:
            try:
                result = getattr(self.studio, method)(
                    *args, progress=lambda s, t: events.put(("progress", s, t)), cancel=token,
                    preview=(lambda im, s, t: events.put(("preview", im, s, t)))
                    if previews else None)
                events.put(("result", self._payload(result)))
            except BaseException as err:  # noqa: BLE001 - every failure goes to the front
                self.studio.outputs.take()  # nothing of a failed job is saved
                events.put(("error", portable_error(err)))

        yield ("started", os.getpid())
        thread = threading.Thread(target=work, name=f"job-{job_id}", daemon=True)
        thread.start()
        polled = sent = time.monotonic()
        progress = None  # the latest step not sent yet
        while True:
            try:
                event = events.get(timeout=POLL_S)
            except queue.Empty:
                event = None
            now = time.monotonic()
            if now - polled >= POLL_S:  # a Stop from the front?
                polled = now
                if not token.cancelled and self._stopped(job_id):
                    token.cancel()
            if event is not None and event[0] == "progress":
                progress, event = event, None  # steps are sent at most every POLL_S
            if progress is not None and (event is not None or now - sent >= POLL_S):
                yield progress
                progress, sent = None, now
            if event is None:
                continue
            yield event
            if event[0] in ("result", "error"):
                thread.join()
                return

    def _stopped(self, job_id: str) -> bool:
        import ray

        try:
            return bool(ray.get(self.board.stopped.remote(job_id), timeout=5))
        except Exception:  # noqa: BLE001 - a board that does not answer stops nothing
            return False

    def _payload(self, result: Result) -> dict[str, Any]:
        outputs = self.studio.outputs
        return {
            "image": result.image, "info": result.info,
            "name": outputs.name_of(result.path) if result.path is not None else None,
            "extra_images": list(result.extra_images), "files": outputs.take(),
        }

    def call(self, target: str, method: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        """A quick call that makes no output files: `annotators.<method>` or `<method>`."""
        owner = self.studio.annotators if target == "annotators" else self.studio
        try:
            return getattr(owner, method)(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - re-raised on the front as it was
            raise portable_error(err) from None

    def import_concept(self, data: bytes, filename: str, name: str, model: str = ""
                       ) -> dict[str, Any]:
        """Import a weights file sent as bytes (the front checked its size and name)."""
        folder = Path(tempfile.mkdtemp(dir=self._imports))
        path = folder / Path(filename).name
        try:
            path.write_bytes(data)
            return self.studio.import_concept(path, name, model)
        except BaseException as err:  # noqa: BLE001 - re-raised on the front as it was
            raise portable_error(err) from None
        finally:
            path.unlink(missing_ok=True)
            folder.rmdir()
