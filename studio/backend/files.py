"""The one gate for files a request names by path: the server opens only what it was given
(uploads, in gradio's upload folder) or made (its outputs, its caches).

A client controls every path it sends: a raw HTTP payload `{"path": "/etc/x.png"}`, a path
stored in a crafted PNG's metadata, JSON held in the browser. Every image, mask and weights
file the backend reads from a path goes through `check_file` (via `images.load_image` and the
concept importer), which accepts only regular files whose real path (symbolic links resolved)
lies under an allowed folder. The folders are registered by whoever owns them: the Studio its
outputs folder, the UI gradio's upload folder, a script the folder it works in.

The policy is process-wide on purpose: one server process serves one set of folders, and a
gate that each caller must remember to pass along is a gate someone forgets.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Any

from .requests import RequestError

_roots: list[Path] = []
# the same folders as path strings, as registered (absolute) and resolved: a client names a
# file by the path the server gave it, which may run through a linked folder
_prefixes: list[str] = []
_lock = threading.Lock()


def allow_root(folder: str | Path) -> Path:
    """Allow reading files under `folder` (created if missing); returns its real path."""
    given = os.path.normpath(os.path.abspath(Path(folder).expanduser()))
    real = Path(os.path.realpath(given))
    real.mkdir(parents=True, exist_ok=True)
    with _lock:
        if real not in _roots:
            _roots.append(real)
        _prefixes.extend(p for p in dict.fromkeys((given, str(real))) if p not in _prefixes)
    return real


def allowed_roots() -> list[Path]:
    """The folders files may be read from (real paths)."""
    with _lock:
        return list(_roots)


def allowed_prefixes() -> list[str]:
    """The allowed folders as path strings, both as registered and resolved."""
    with _lock:
        return list(_prefixes)


def is_allowed(path: str | Path) -> bool:
    """True when the real path of `path` lies under an allowed folder (the file may not exist)."""
    real = Path(os.path.realpath(Path(path)))
    return any(real.is_relative_to(root) for root in allowed_roots())


def check_file(value: Any, name: str = "file", max_bytes: int | None = None) -> Path:
    """The real path of the regular file `value`, if the server may open it.

    Raises RequestError (shown to the client as is) for a file outside the allowed folders,
    a missing file, something that is not a regular file, or a file over `max_bytes`. The
    message never echoes the path a client sent, only its file name.
    """
    if not isinstance(value, (str, Path)) or not str(value):
        raise RequestError(f"{name} must be an uploaded file")
    path = Path(value)
    if not is_allowed(path):
        raise RequestError(
            f"{name}: the server opens only files uploaded with the request or made by the "
            f"studio itself, not '{path.name}' named by a path. Upload the file instead."
        )
    real = Path(os.path.realpath(path))
    try:
        info = real.stat()
    except OSError:
        raise RequestError(f"{name}: file '{path.name}' was not found") from None
    if not stat.S_ISREG(info.st_mode):
        raise RequestError(f"{name}: '{path.name}' is not a regular file")
    if max_bytes is not None and info.st_size > max_bytes:
        raise RequestError(
            f"{name}: '{path.name}' is {info.st_size / 2**20:.1f} MB; the limit is "
            f"{max_bytes / 2**20:.0f} MB"
        )
    return real
