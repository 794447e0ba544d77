"""Upscalers: how an image is enlarged, by name (hires fix, `/upscale`, A1111's upscalers).

Names: `latent` (hires fix only: the first pass's latents, interpolated), `lanczos` (PIL's
Lanczos filter), `none` (no upscaler: pixels repeated, nearest neighbour), and one per model
file (ESRGAN family: RealESRGAN, its compact SRVGG net, SwinIR, ...) in the upscaler folders:
`--upscalers-dir` and the built-in set's own. A model is named by its file's stem, never by
its path.

Models load with `spandrel` (which tells the architecture from the state dict's keys) from
`.safetensors` files only: a pickled `.pth`/`.pt`/`.ckpt` can run code when loaded, so it is
refused, unopened, with the command that converts it. Large images run in tiles with blended
seams (`tiled`), on the registry's device; callers hold the Studio's device lock.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .requests import BUILTIN_UPSCALERS as BUILTIN
from .requests import LANCZOS, LATENT, RequestError, is_upscaler_model
from .requests import NO_UPSCALER as NONE

log = logging.getLogger(__name__)

PIXEL_UPSCALERS = (LANCZOS, NONE)  # the built-in ones that work on pixels
MODEL_SUFFIX = ".safetensors"
PICKLED = (".pth", ".pt", ".ckpt", ".bin", ".pkl")
TILE, OVERLAP = 256, 32  # input pixels per tile, and shared between neighbours
CONVERT = ("python -c \"import torch, safetensors.torch as st; "
           "sd = torch.load('{name}', map_location='cpu', weights_only=True); "
           "sd = sd.get('params_ema', sd.get('params', sd)); "
           "st.save_file({{k: v.contiguous() for k, v in sd.items()}}, '{stem}.safetensors')\"")


def conversion_command(path: Path) -> str:
    """The one-liner that turns a pickled upscaler file into safetensors (run it on a
    machine you trust: `weights_only=True` limits what unpickling may do)."""
    return CONVERT.format(name=path.name, stem=path.stem)


def resize(image: Image.Image, size: tuple[int, int], upscaler: str = LANCZOS) -> Image.Image:
    """`image` at `size` with a built-in pixel upscaler (lanczos, or none = nearest)."""
    if image.size == size:
        return image
    method = Image.Resampling.NEAREST if upscaler == NONE else Image.Resampling.LANCZOS
    return image.resize(size, method)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of `tile` pixels start along a side of `length` so neighbours share
    `overlap` pixels; one tile when the side fits in it."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return [*starts, length - tile]


def _ramp(length: int, overlap: int, before: bool, after: bool) -> np.ndarray:
    """A tile's blending weight along one side: 0 in the outer quarter of each shared edge
    (where the tile's padding shows), rising linearly to 1 across the middle half."""
    w = np.ones(length, np.float32)
    if overlap <= 0:
        return w
    d = np.arange(length, dtype=np.float32)
    rise = np.clip((d - overlap / 4) / (overlap / 2), 0, 1)
    if before:
        w = np.minimum(w, rise)
    if after:
        w = np.minimum(w, rise[::-1])
    return np.maximum(w, 1e-6)


def tiled(run: Any, array: np.ndarray, scale: int, tile: int = TILE,
          overlap: int = OVERLAP) -> np.ndarray:
    """`run(HxWx3 float array) -> (sH)x(sW)x3` over tiles of `tile` input pixels that share
    `overlap` with their neighbours, blended so no seam shows: each tile's outer quarter of a
    shared edge is not used and the middle half fades across (weights normalised)."""
    h, w = array.shape[:2]
    overlap = min(overlap, tile // 2)
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return run(array)
    out = np.zeros((h * scale, w * scale, 3), np.float32)
    weight = np.zeros((h * scale, w * scale, 1), np.float32)
    for y in ys:
        for x in xs:
            th, tw = min(tile, h - y), min(tile, w - x)
            part = run(array[y:y + th, x:x + tw])
            wy = _ramp(th * scale, overlap * scale, y > 0, y + th < h)
            wx = _ramp(tw * scale, overlap * scale, x > 0, x + tw < w)
            mask = (wy[:, None] * wx[None, :])[..., None]
            out[y * scale:(y + th) * scale, x * scale:(x + tw) * scale] += part * mask
            weight[y * scale:(y + th) * scale, x * scale:(x + tw) * scale] += mask
    return out / weight


class UpscalerLibrary:
    """The upscalers a studio offers: the built-in names and the model files of its folders
    (scanned on each listing, loaded on first use and kept)."""

    def __init__(self, folders: list[Path], device: Any = "cpu", dtype: Any = None,
                 tile: int = TILE, overlap: int = OVERLAP) -> None:
        self.folders = [Path(f) for f in folders if f]
        self.device, self.dtype = device, dtype
        self.tile, self.overlap = tile, overlap
        self._models: dict[Path, Any] = {}
        self._scales: dict[tuple[Path, float], int | None] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ names
    def _files(self) -> dict[str, Path]:
        """stem -> file of every model file (safetensors or pickled) in the folders; the
        first folder wins a name."""
        found: dict[str, Path] = {}
        for folder in self.folders:
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                suffix = path.suffix.lower()
                if path.is_file() and (suffix == MODEL_SUFFIX or suffix in PICKLED):
                    found.setdefault(path.stem, path)
        return found

    def model_names(self) -> list[str]:
        """The usable model files' names (safetensors only)."""
        return [n for n, p in self._files().items() if p.suffix.lower() == MODEL_SUFFIX
                and n not in BUILTIN]

    def names(self, latent: bool = True) -> list[str]:
        """Every upscaler's name: the built-in ones, then the models (`latent` only where
        latents are at hand: hires fix)."""
        builtin = BUILTIN if latent else PIXEL_UPSCALERS
        return [*builtin, *self.model_names()]

    def check(self, name: Any, what: str = "upscaler", latent: bool = True,
              files: dict[str, Path] | None = None) -> str:
        """The upscaler `name` means (case-insensitive); an unknown name lists the known
        ones, a pickled model file is refused with its conversion command. `files`: the
        folders' listing when the caller already has it."""
        if not isinstance(name, str) or not name.strip():
            raise RequestError(f"{what} must be an upscaler's name; choose one of: "
                               f"{', '.join(self.names(latent))}")
        wanted = name.strip()
        if wanted.lower() in BUILTIN:
            if wanted.lower() == LATENT and not latent:
                raise RequestError(f"{what} 'latent' enlarges a generation's latents (hires "
                                   "fix); an image has none: choose one of "
                                   f"{', '.join(self.names(latent=False))}")
            return wanted.lower()
        files = self._files() if files is None else files
        stem = wanted
        if Path(wanted).suffix.lower() in (MODEL_SUFFIX, *PICKLED):
            stem = Path(wanted).stem
        if "/" in wanted or "\\" in wanted:
            raise RequestError(f"{what} must be an upscaler's name, not a path; choose one "
                               f"of: {', '.join(self.names(latent))}")
        match = files.get(stem) or next((p for n, p in files.items()
                                         if n.lower() == stem.lower()), None)
        if match is None:
            raise RequestError(f"unknown {what} {name!r}; choose one of: "
                               f"{', '.join(self.names(latent))}")
        if match.suffix.lower() != MODEL_SUFFIX:
            raise RequestError(
                f"{what} {match.stem!r} is a pickled file ({match.suffix}), which can run code "
                "when loaded, so the studio does not open it. Convert it to safetensors on a "
                f"machine you trust: {conversion_command(match)}")
        return match.stem

    def is_model(self, name: str) -> bool:
        return is_upscaler_model(name)

    # ------------------------------------------------------------------ models
    def model(self, name: str) -> Any:
        """The spandrel model descriptor of upscaler `name` (loaded once, on the device)."""
        files = self._files()  # one listing of the folders for the check and the path
        path = files[self.check(name, files=files)]
        with self._lock:
            if path not in self._models:
                self._models[path] = self._load(path)
            return self._models[path]

    def _load(self, path: Path) -> Any:
        """Read a safetensors file (never a pickle) and let spandrel build its network."""
        import torch
        from safetensors.torch import load_file
        from spandrel import ModelLoader

        try:
            state = load_file(str(path))
            descriptor = ModelLoader().load_from_state_dict(state)
        except Exception as err:  # noqa: BLE001 - safetensors and spandrel raise many kinds
            raise RequestError(f"upscaler {path.stem!r} could not be loaded: it is not an "
                               f"upscaling model spandrel knows ({type(err).__name__})") from err
        if not hasattr(descriptor, "scale") or descriptor.input_channels != 3:
            raise RequestError(f"upscaler {path.stem!r} is not an RGB image model")
        half = self.dtype == torch.float16 and descriptor.supports_half
        descriptor.to(torch.device(str(self.device))).eval()
        if half:
            descriptor.half()
        log.info("loaded upscaler %s (%s, %dx)", path.stem, descriptor.architecture.name,
                 descriptor.scale)
        return descriptor

    def scale_hint(self, name: str) -> int | None:
        """A model's factor for listings, read on the CPU without moving it to the device
        (None when the file is not a model spandrel knows)."""
        path = self._files().get(name)
        if path is None or path.suffix.lower() != MODEL_SUFFIX:
            return None
        key = (path, path.stat().st_mtime)
        if key not in self._scales:
            from safetensors.torch import load_file
            from spandrel import ModelLoader

            try:
                self._scales[key] = int(ModelLoader().load_from_state_dict(
                    load_file(str(path))).scale)
            except Exception:  # noqa: BLE001 - a listing names what it cannot read as None
                self._scales[key] = None
        return self._scales[key]

    def scale_of(self, name: str) -> int:
        """The model's own factor (1 for the built-in upscalers, which resize to any size)."""
        return int(self.model(name).scale) if self.is_model(name) else 1

    def upscale(self, image: Image.Image, name: str, size: tuple[int, int],
                cancel: Any = None) -> Image.Image:
        """`image` enlarged to `size` by upscaler `name`: a model runs (in tiles) at its own
        factor, as often as needed, then Lanczos fits the exact size."""
        name = self.check(name, latent=False)
        if not self.is_model(name):
            return resize(image, size, name)
        descriptor = self.model(name)
        current = image.convert("RGB")
        while current.width < size[0] or current.height < size[1]:
            current = self.run_model(descriptor, current, cancel=cancel)
            if descriptor.scale <= 1:
                break
        return resize(current, size, LANCZOS)

    def run_model(self, descriptor: Any, image: Image.Image, tile: int | None = None,
                  cancel: Any = None) -> Image.Image:
        """One pass of the model over `image` (tiled when larger than a tile; Stop and the
        job's deadline are checked before each tile)."""
        import torch

        param = next(descriptor.model.parameters())

        def run(part: np.ndarray) -> np.ndarray:
            if cancel is not None:
                cancel.check("the upscale")
            x = torch.from_numpy(np.ascontiguousarray(part)).permute(2, 0, 1)[None]
            with torch.inference_mode():
                y = descriptor(x.to(param.device, param.dtype))
            return y[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()

        array = np.asarray(image.convert("RGB"), np.float32) / 255.0
        out = tiled(run, array, int(descriptor.scale), tile or self.tile, self.overlap)
        return Image.fromarray(np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8))
