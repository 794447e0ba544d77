"""A stand-in for the Hugging Face Hub's file endpoints, served locally (`HF_ENDPOINT`), so the
first-use download path (and a gated repository's refusal) can be tested offline.

It answers what `hf_hub_download` asks: `HEAD`/`GET /{repo}/resolve/{revision}/{path}` with
the commit, ETag and size headers huggingface_hub reads, 404 with `X-Error-Code:
EntryNotFound` for a missing file, and 401 with `X-Error-Code: GatedRepo` for a gated repo.
`GET /api/models/{repo}...` gets the repo's file list. Files are sent in small chunks with a
pause between them (`delay`), so a download takes long enough to be watched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """repo id -> local folder in the Hub layout; `gated` repos refuse every file."""

    def __init__(self, repos: dict[str, Path], gated: tuple[str, ...] = (),
                 delay: float = 0.0, chunk: int = 64 * 1024) -> None:
        self.repos = {k: Path(v) for k, v in repos.items()}
        self.gated, self.delay, self.chunk = set(gated), delay, chunk
        self.requests: list[str] = []

    def file(self, path: str) -> tuple[str, Path | None, int]:
        """(repo id, file or None, HTTP status) for a /resolve/ path."""
        parts = unquote(urlparse(path).path).lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return "", None, 404
        repo, rel = "/".join(parts[:2]), "/".join(parts[4:])
        if repo in self.gated:
            return repo, None, 401
        root = self.repos.get(repo)
        if root is None:
            return repo, None, 404
        target = (root / rel).resolve()
        if root.resolve() not in target.parents or not target.is_file():
            return repo, None, 404
        return repo, target, 200


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _error(self, status: int, code: str) -> None:
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _api(self) -> None:
            parts = unquote(urlparse(self.path).path).split("/")
            repo = "/".join(parts[3:5])
            root = hub.repos.get(repo)
            if root is None:
                self._error(404, "RepoNotFound")
                return
            files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                           if p.is_file())
            if len(parts) > 6 and parts[5] == "tree":  # a folder's listing
                folder = "/".join(parts[7:]).strip("/")
                found = [{"type": "file", "path": f, "size": (root / f).stat().st_size,
                          "oid": COMMIT} for f in files
                         if f.rpartition("/")[0] == folder]
                body = json.dumps(found).encode()
            else:
                body = json.dumps({"id": repo, "sha": COMMIT, "private": False,
                                   "gated": repo in hub.gated,
                                   "siblings": [{"rfilename": f} for f in files]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _resolve(self, send_body: bool) -> None:
            hub.requests.append(f"{self.command} {self.path}")
            if self.path.startswith("/api/"):
                self._api()
                return
            repo, target, status = hub.file(self.path)
            if status == 401:
                self._error(401, "GatedRepo")
                return
            if target is None:
                self._error(404, "EntryNotFound" if repo in hub.repos else "RepoNotFound")
                return
            data = target.read_bytes()
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if send_body:
                for start in range(0, len(data), hub.chunk):
                    self.wfile.write(data[start:start + hub.chunk])
                    if hub.delay:
                        time.sleep(hub.delay)

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            self._resolve(send_body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._resolve(send_body=True)

    return Handler


@contextlib.contextmanager
def serving(hub: FakeHub) -> Iterator[str]:
    """The fake Hub's URL (for HF_ENDPOINT) while the block runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
