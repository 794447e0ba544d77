"""The concept library on disk: one folder per concept (`concept.json`, its weights,
`examples/`, `thumbnails/`), and the concept files a user may import (safetensors only; what
kind of concept a file holds)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..files import check_file
from ..requests import RequestError

CONCEPT_FILE = "concept.json"
EMBEDDING_FILE = "learned_embeds.safetensors"
LORA_FILE = "pytorch_lora_weights.safetensors"
NOISE_FILE = "noises.safetensors"
EXAMPLES_DIR, THUMBS_DIR = "examples", "thumbnails"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".pt", ".bin", ".pth", ".ckpt", ".pkl")
MAX_IMPORT_BYTES = 2 * 1024**3  # a LoRA for SD1.5 is at most a few hundred MB
TEXT_ENCODER_LORA_PREFIXES = ("lora_te", "text_encoder", "te_", "te1_", "te2_")


# ---------------------------------------------------------------------------- library entries
@dataclass
class Concept:
    """One concept of the library, as described by its `concept.json`."""

    name: str
    token: str
    method: str
    folder: Path
    uid: str
    source: str = "trained"  # or "imported"
    created: str = ""
    files: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def adapter(self) -> str:
        """The LoRA adapter name in the shared UNet (the uid keeps retrained versions apart)."""
        return f"concept-{self.name}-{self.uid[:8]}"

    def path(self, key: str) -> Path:
        return self.folder / self.files[key]

    def thumbnails(self) -> list[Path]:
        return sorted((self.folder / THUMBS_DIR).glob("*.png"))

    def example_paths(self) -> list[str]:
        return [str(p) for p in sorted((self.folder / EXAMPLES_DIR).glob("*.png"))]

    def noise(self, index: int = 0) -> torch.Tensor:
        """An optimised starting noise of a SeedSelect concept (main first)."""
        from safetensors.torch import load_file

        if "noises" not in self.files:
            raise RequestError(f"concept {self.token} is a {self.method} concept, not SeedSelect")
        noises = load_file(str(self.path("noises")))
        key = f"noise_{index}"
        if key not in noises:
            raise RequestError(f"concept {self.token} has {len(noises)} noises, not {index + 1}")
        return noises[key]

    def to_dict(self) -> dict[str, Any]:
        """JSON for clients: file names relative to the library folder, never server paths."""
        return {
            **self.details,
            "name": self.name, "token": self.token, "method": self.method,
            "source": self.source, "created": self.created, "folder": self.folder.name,
            "files": {k: f"{self.folder.name}/{v}" for k, v in self.files.items()},
            "thumbnails": [f"{self.folder.name}/{THUMBS_DIR}/{p.name}"
                           for p in self.thumbnails()],
        }

    @classmethod
    def read(cls, folder: Path) -> Concept:
        data = json.loads((folder / CONCEPT_FILE).read_text())
        known = {"name", "token", "method", "uid", "source", "created", "files"}
        return cls(folder=folder, details={k: v for k, v in data.items()
                                           if k not in known and k != "version"},
                   **{k: data[k] for k in known if k in data})


def fsync_tree(folder: Path) -> None:
    """Flush every file under `folder`, and the folders themselves, to disk."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    for path in [*sorted(p for p in folder.rglob("*") if p.is_dir()), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def has_concepts(folder: Path) -> bool:
    """True when the library folder holds at least one finished concept (cheap)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    return any(not p.name.startswith(".") and (p / CONCEPT_FILE).is_file()
               for p in folder.iterdir())


# ---------------------------------------------------------------------------- importing
def read_weights_file(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensors and metadata of a concept file: safetensors only.

    Pickled files (.pt, .bin, .ckpt) can run code when loaded, and `torch.load`'s
    weights_only guard has been bypassed before (CVE-2025-32434), so they are refused
    without being opened.
    """
    path = check_file(path, "file", max_bytes=MAX_IMPORT_BYTES)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise RequestError(
            f"'{path.name}' was refused: it is a pickled file, and pickles can run code when "
            "loaded. Import a .safetensors file (convert it on a machine you trust: load it "
            "with torch.load and save the tensors with safetensors.torch.save_file)."
        )
    if suffix != ".safetensors":
        raise RequestError(
            f"'{path.name}' has an unsupported type; import a textual-inversion embedding or "
            "a LoRA as .safetensors"
        )
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
        return load_file(str(path)), metadata
    except Exception as err:  # noqa: BLE001 - any parse failure is the same user error
        raise RequestError(
            f"'{path.name}' is not a valid safetensors file ({type(err).__name__})"
        ) from err


def classify(state: dict[str, Any]) -> tuple[str, Any]:
    """("textual_inversion", tensor [n, dim] or SDXL's {"clip_l", "clip_g"} tensors) or
    ("lora", state dict), else a clear error."""
    if "string_to_param" in state:  # A1111 .pt
        params = state["string_to_param"]
        tensor = params.get("*") if isinstance(params, dict) else None
        if not isinstance(tensor, torch.Tensor):
            raise RequestError("A1111 embedding without a tensor under string_to_param['*']")
        return "textual_inversion", tensor
    if "emb_params" in state:  # A1111 .safetensors
        return "textual_inversion", state["emb_params"]
    if {"clip_l", "clip_g"} & set(state):  # SDXL: one tensor per text encoder
        parts = {k: state[k] for k in ("clip_l", "clip_g") if k in state}
        if not all(isinstance(t, torch.Tensor) for t in parts.values()):
            raise RequestError("an SDXL embedding's clip_l and clip_g must be tensors")
        return "textual_inversion", parts
    keys = [k for k in state if isinstance(k, str)]
    if len(keys) > 1 and any("lora" in k.lower() for k in keys):
        return "lora", state
    if len(state) == 1:  # diffusers: {token: tensor}
        tensor = next(iter(state.values()))
        if isinstance(tensor, torch.Tensor) and tensor.ndim in (1, 2):
            return "textual_inversion", tensor
    shown = ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
    raise RequestError(
        "not a textual-inversion embedding (A1111 string_to_param/emb_params or diffusers "
        f"{{token: tensor}}) nor a LoRA (kohya lora_unet_... or diffusers keys); keys: {shown}"
    )


def unet_lora_only(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Drop text-encoder LoRA tensors (the text encoder is shared by every tab)."""
    keep = {k: v.contiguous() for k, v in state.items()
            if isinstance(v, torch.Tensor) and not k.startswith(TEXT_ENCODER_LORA_PREFIXES)}
    dropped = sum(1 for k in state if k.startswith(TEXT_ENCODER_LORA_PREFIXES))
    if not keep:
        raise RequestError("this LoRA has only text-encoder weights; the studio needs UNet ones")
    return keep, dropped
