"""Save every image once, with its full parameters, and read them back.

Each PNG carries two text chunks: `parameters` in the AUTOMATIC1111 layout (so other tools
and PNG-info readers understand it) and `studio_request`, the exact request as JSON, so the
image can be regenerated bit-identically or sent back to a tab. Inputs a request used (an
uploaded photo, a mask, a control map as applied) are saved next to the outputs and the stored
request names them *relative to the outputs folder*: no absolute server path ever leaves the
server, and regenerating resolves those names inside the outputs folder only.

Writes are crash-safe: a temporary file in the same folder, flushed and fsynced, then renamed
over the final name; a failed write leaves nothing behind.
"""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from PIL import Image, PngImagePlugin

from .images import SOURCE_KEY
from .requests import RequestError

REQUEST_CHUNK = "studio_request"
PARAMETERS_CHUNK = "parameters"
MAX_TEXT_CHUNK = 1 << 20  # metadata larger than this (1 MB, after decompression) is ignored
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# zlib level of saved PNGs: lossless at every level; 1 (fastest) instead of Pillow's 6 saves
# up to tens of ms per 512 px image for files ~10-30% larger (bench/RESULTS.md, overhead)
PNG_COMPRESS_LEVEL = 1


def a1111_parameters(request: dict[str, Any], model: str = "", model_hash: str | None = None
                     ) -> str:
    """The A1111 `parameters` text: prompt, negative prompt, then `Key: value` pairs."""
    if request.get("task") == "upscale":  # as A1111's Extras tab writes it
        return (f"Postprocess upscale by: {request.get('scale')}, Postprocess upscaler: "
                f"{_quoted(request.get('upscaler'))}, Task: upscale")
    lines = [str(request.get("prompt", ""))]
    if request.get("negative_prompt"):
        lines.append(f"Negative prompt: {request['negative_prompt']}")
    pairs = [
        ("Steps", request.get("steps")),
        ("Sampler", "LCM" if request.get("fast") else request.get("scheduler")),
        ("Schedule type", request.get("schedule")
         if request.get("schedule") not in (None, "default") else None),
        ("CFG scale", request.get("guidance_scale")),
        ("Image CFG scale", request.get("image_guidance_scale")),
        ("Seed", request.get("seed")),
        ("Size", f"{request.get('width')}x{request.get('height')}"
         if request.get("width") else None),
        ("Model hash", model_hash),
        ("Model", model or None),
        ("Clip skip", request.get("clip_skip") if (request.get("clip_skip") or 1) > 1
         else None),
        *_hires_pairs(request),
        ("Task", request.get("task")),
        ("Attend-and-Excite", (request.get("excite_words") or "auto")
         if request.get("attend_excite") else None),
        ("Edited prompt", request.get("edited_prompt")),
        ("Prompt edit", _prompt_edit_text(request) if request.get("task") == "prompt_edit"
         else None),
        ("Remix", _remix_text(request) if request.get("task") == "remix" else None),
        ("IP-Adapter reference", f"{len(request['reference_images'])} x "
         f"{request.get('reference_scale')}" if request.get("reference_images") else None),
    ]
    lines.append(", ".join(f"{k}: {_quoted(v)}" for k, v in pairs if v not in (None, "")))
    return "\n".join(lines)


def _hires_pairs(request: dict[str, Any]) -> list[tuple[str, Any]]:
    """Hires fix in A1111's words (its Size stays the first pass's, as A1111 writes it)."""
    scale = request.get("hires_scale") or 1
    if not isinstance(scale, (int, float)) or scale <= 1:
        return []
    return [("Denoising strength", request.get("hires_denoise")),
            ("Hires upscale", scale), ("Hires steps", request.get("hires_steps") or None),
            ("Hires upscaler", request.get("hires_upscaler")),
            ("Hires prompt", request.get("hires_prompt") or None)]


def _prompt_edit_text(request: dict[str, Any]) -> str:
    text = (f"{request.get('mode')} cross {request.get('cross_replace')} self "
            f"{request.get('self_replace')}")
    if request.get("reweight"):
        text += f" weights {json.dumps(request['reweight'], sort_keys=True)}"
    if request.get("local_blend"):
        text += f" blend {request['local_blend']}"
    return text


def _remix_text(request: dict[str, Any]) -> str:
    images = request.get("images") or []
    text = (f"{len(images)} image{'s' if len(images) != 1 else ''} weights "
            f"{json.dumps(request.get('weights'))} scale {request.get('image_scale')}")
    if request.get("text_from") and request.get("text_to"):
        text += (f" diff {json.dumps(request['text_from'])} -> "
                 f"{json.dumps(request['text_to'])} x {request.get('text_amount')}")
    return text


def _quoted(value: Any) -> str:
    """A1111 quotes a value that holds its separators (as JSON), so readers can split."""
    text = str(value)
    return json.dumps(text) if any(c in text for c in ',:"\n') else text


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write `path` through a temporary file: flush, fsync, rename; nothing left on failure."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class OutputStore:
    """Writes images atomically into one folder (per day) with unique names."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._counter = 0

    @property
    def root(self) -> Path:
        """The real path of the outputs folder (created on first use)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return Path(os.path.realpath(self.folder))

    def _day(self) -> Path:
        day = self.folder / time.strftime("%Y-%m-%d")
        day.mkdir(parents=True, exist_ok=True)
        return day

    def save(self, image: Image.Image, request: dict[str, Any], model: str = "",
             extra: dict[str, Any] | None = None, model_hash: str | None = None) -> Path:
        """Save `image` with metadata (the checkpoint's name and short hash, as A1111 writes
        them); returns the final path. Never leaves partial files."""
        with self._lock:
            self._counter += 1
            n = self._counter
        task = request.get("task", "image")
        stamp = time.strftime("%H%M%S")
        # a full random id: names must not be guessable from the time and seed
        name = f"{stamp}-{n:04d}-{task}-{request.get('seed', 0)}-{uuid.uuid4().hex}.png"
        info = PngImagePlugin.PngInfo()
        info.add_text(PARAMETERS_CHUNK, a1111_parameters(request, model, model_hash))
        payload = {"request": request, "model": model, "model_hash": model_hash,
                   **(extra or {})}
        info.add_text(REQUEST_CHUNK, json.dumps(payload, sort_keys=True))
        return self._write(self._day() / name,
                           lambda fh: image.save(fh, format="PNG", pnginfo=info,
                                                 compress_level=PNG_COMPRESS_LEVEL))

    def save_aux(self, image: Image.Image, stem: str) -> Path:
        """Save an auxiliary image (a control map, a mask, an input) next to the outputs."""
        name = f"{time.strftime('%H%M%S')}-{stem}-{uuid.uuid4().hex}.png"
        return self._write(self._day() / name, lambda fh: image.save(
            fh, format="PNG", compress_level=PNG_COMPRESS_LEVEL))

    def _write(self, path: Path, write: Callable[[BinaryIO], None]) -> Path:
        """Every file this store makes goes through here (a scale-out replica overrides it
        to hand the bytes to the front process instead)."""
        return write_atomic(path, write)

    def save_file(self, stem: str, suffix: str, write: Callable[[Path], None]) -> Path:
        """Save a non-image file (SeedSelect noises) next to the outputs, atomically:
        `write(path)` writes a temporary file that is fsynced and renamed into place."""
        final = self._day() / f"{time.strftime('%H%M%S')}-{stem}-{uuid.uuid4().hex}{suffix}"
        tmp = final.with_name(".tmp-" + final.name)
        try:
            write(tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return final

    def name_of(self, path: str | Path) -> str:
        """`path` relative to the outputs folder ("2026-12-02/1200-....png")."""
        return Path(os.path.realpath(path)).relative_to(self.root).as_posix()

    def record_input(self, value: Any, stem: str) -> Any:
        """The stored name of an input image: the file it was read from when that is already
        in the outputs folder, else a copy saved there. Non-images pass through."""
        if not isinstance(value, Image.Image):
            return value
        source = value.info.get(SOURCE_KEY)
        if source and Path(source).is_relative_to(self.root):
            return self.name_of(source)
        return self.name_of(self.save_aux(value, stem))

    def resolve_stored(self, value: Any, what: str) -> Any:
        """A stored input name -> its file in the outputs folder (for regenerating).

        Names are relative to the outputs folder (absolute paths inside it, as older images
        stored them, are accepted too). Anything that points elsewhere is refused: a crafted
        PNG must not make the server read, or copy into its outputs, any other file.
        """
        if value is None or isinstance(value, Image.Image):
            return value
        if not isinstance(value, str) or not value:
            raise RequestError(f"the saved request's {what} is not a file name: {value!r}")
        stored = PurePosixPath(value)
        root = self.root
        path = Path(value) if stored.is_absolute() else root / stored
        real = Path(os.path.realpath(path))
        if ".." in stored.parts or not real.is_relative_to(root):
            raise RequestError(
                f"the saved request's {what} names '{stored.name}' outside the outputs "
                "folder; only inputs the studio saved itself can be regenerated"
            )
        if not real.is_file():
            raise RequestError(
                f"the saved request's {what} '{stored.name}' is no longer in the outputs folder"
            )
        return str(real)


def png_text(source: str | Path | bytes | BinaryIO) -> dict[str, str]:
    """The text chunks (tEXt, zTXt, iTXt) of a PNG, read without decoding its pixels.

    Pillow reads text chunks that follow the image data only by decoding the whole image,
    which a small file can make enormous; this walks the chunks and skips the pixel data.
    Anything that is not a PNG has no text.
    """
    if isinstance(source, (bytes, bytearray)):
        return _png_text(io.BytesIO(source))
    if isinstance(source, (str, Path)):
        with open(source, "rb") as fh:
            return _png_text(fh)
    return _png_text(source)


def _png_text(fh: BinaryIO) -> dict[str, str]:
    if fh.read(8) != PNG_SIGNATURE:
        return {}
    out: dict[str, str] = {}
    while True:
        head = fh.read(8)
        if len(head) < 8:
            break
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IEND":
            break
        if kind in (b"tEXt", b"zTXt", b"iTXt") and length <= MAX_TEXT_CHUNK * 4:
            parsed = _text_chunk(kind, fh.read(length))
            if parsed is not None:
                out.setdefault(*parsed)
        else:
            fh.seek(length, os.SEEK_CUR)
        fh.seek(4, os.SEEK_CUR)  # CRC
    return out


def _inflate(data: bytes) -> bytes | None:
    """zlib data, or None when it is corrupt or would exceed MAX_TEXT_CHUNK (a zip bomb)."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, MAX_TEXT_CHUNK)
    except zlib.error:
        return None
    return None if inflater.unconsumed_tail else text


def _text_chunk(kind: bytes, data: bytes) -> tuple[str, str] | None:
    key, sep, rest = data.partition(b"\0")
    if not sep:
        return None
    name = key.decode("latin-1")
    if kind == b"tEXt":
        return name, rest.decode("latin-1")
    if kind == b"zTXt":
        text = _inflate(rest[1:])
        return None if text is None else (name, text.decode("latin-1"))
    # iTXt: compressed flag, method, language\0, translated keyword\0, text (UTF-8)
    if len(rest) < 2:
        return None
    compressed, body = rest[0], rest[2:]
    _, _, body = body.partition(b"\0")
    _, _, body = body.partition(b"\0")
    if compressed:
        body = _inflate(body)
        if body is None:
            return None
    return name, body.decode("utf-8", errors="replace")


def read_metadata(image: Image.Image | str | Path | bytes) -> tuple[str, dict[str, Any] | None]:
    """Return (A1111 parameters text, studio payload or None) of a saved image.

    Files are read chunk by chunk without decoding pixels; unreadable ones have no metadata.
    """
    if isinstance(image, Image.Image):
        text = dict(image.info)
    else:
        try:
            text = png_text(image)
        except OSError:
            return "", None
    params = text.get(PARAMETERS_CHUNK, "")
    raw = text.get(REQUEST_CHUNK)
    payload = None
    if raw:
        try:
            payload = json.loads(raw)
        except json.JSONDecodeError:
            payload = None
    if not isinstance(payload, dict):
        payload = None
    return params if isinstance(params, str) else "", payload
