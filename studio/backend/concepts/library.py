"""The concept library: learn, import, store and apply concepts (`<my-dog>`) in every tab.

A concept is a token such as `<my-dog>` plus what was learned for it from 3-20 pictures:

- `textual_inversion`: one new token embedding (the shared tokenizer/text encoder learn the
  token once; every tab that mentions it uses it);
- `lora`: a low-rank adapter on the UNet attention, trained DreamBooth style with the token
  in the prompt, loaded once into a shared UNet under the adapter name of the concept and
  active only in calls whose prompt mentions the token;
- `seedselect`: no weights, but starting noises optimised to match the examples (reused as
  `latents=` by `/seedselect` with `concept=<name>`).

On disk, one folder per concept under the library folder: `concept.json` (metadata),
the weights (`learned_embeds.safetensors`, `pytorch_lora_weights.safetensors` or
`noises.safetensors`), `examples/` (the prepared pictures) and `thumbnails/`. A concept is
built in a hidden temporary folder and moved into place with one `os.replace`, so the
library never shows a half-written concept (a cancelled or failed training leaves nothing).

`ConceptManager.hook` is registered in `registry.hooks`; `configure_pipe` calls it before
every generation with the request, so writing the token in any tab's prompt applies it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..common import (
    CancelToken,
    ProgressFn,
    StudioError,
    base_pipeline,
    configure_pipe,
    run_guarded,
)
from ..files import check_file
from ..images import load_image
from ..models.registry import ModelRegistry
from ..requests import (
    MAX_SEED,
    RequestError,
    check_number,
    check_prompt,
    request_from_dict,
)
from . import training
from .seedselect import (
    MAX_BOOTSTRAP,
    MAX_IMAGES,
    MIN_IMAGES,
    SeedSelectRequest,
    check_image_count,
    fit_image,
    noise_dict,
    noise_metadata,
    render_noises,
    run_seedselect,
)

log = logging.getLogger(__name__)

METHODS = ("textual_inversion", "lora", "seedselect")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
CONCEPT_FILE = "concept.json"
EMBEDDING_FILE = "learned_embeds.safetensors"
LORA_FILE = "pytorch_lora_weights.safetensors"
NOISE_FILE = "noises.safetensors"
EXAMPLES_DIR, THUMBS_DIR = "examples", "thumbnails"
THUMB_SIDE = 128
EXAMPLE_MAX_SIDE = 1024
MIN_IMAGE_SIDE = 64
MAX_TRAIN_STEPS = 5000
FORMAT_VERSION = 1
# Defaults when `steps` / `learning_rate` are 0.
DEFAULT_STEPS = {"textual_inversion": 500, "lora": 400, "seedselect": 20}
DEFAULT_LR = {"textual_inversion": 5e-3, "lora": 1e-4, "seedselect": 0.05}
PICKLE_SUFFIXES = (".pt", ".bin", ".pth", ".ckpt", ".pkl")
MAX_IMPORT_BYTES = 2 * 1024**3  # a LoRA for SD1.5 is at most a few hundred MB
MAX_EMBEDDING_VECTORS = 75  # a prompt holds 75 tokens; one vector takes one
TEXT_ENCODER_LORA_PREFIXES = ("lora_te", "text_encoder", "te_", "te1_", "te2_")


# ---------------------------------------------------------------------------- names and images
def parse_name(value: Any) -> tuple[str, str]:
    """`my-dog` or `<my-dog>` -> ("my-dog", "<my-dog>"), or a RequestError saying why not."""
    if not isinstance(value, str) or not value.strip():
        raise RequestError(
            "the concept needs a name, written in prompts as its token: e.g. my-dog, used "
            "as <my-dog>"
        )
    text = value.strip()
    inner = text[1:-1] if text.startswith("<") and text.endswith(">") else text
    if not NAME_RE.fullmatch(inner):
        raise RequestError(
            f"invalid concept name/token {value!r}: use 1-32 lowercase letters, digits, '-' "
            "or '_' (starting with a letter or digit), e.g. my-dog, written in prompts as "
            "<my-dog>"
        )
    return inner, f"<{inner}>"


def prepare_images(values: Any, resolution: int) -> list[Image.Image]:
    """Decode and check 3-20 pictures, centre-crop them square and resize to `resolution`."""
    values = check_image_count(values, MIN_IMAGES, MAX_IMAGES)
    images = []
    for i, value in enumerate(values):
        img = load_image(value, f"image {i + 1}")
        if min(img.size) < MIN_IMAGE_SIDE:
            raise RequestError(
                f"image {i + 1} is {img.size[0]}x{img.size[1]}; concept pictures must be at "
                f"least {MIN_IMAGE_SIDE} px per side"
            )
        images.append(fit_image(img, resolution, resolution))
    return images


def preview_crops(values: list[Any], side: int = THUMB_SIDE,
                  ) -> tuple[list[Image.Image], list[str]]:
    """Centre crops of the pictures as training will see them, and what is wrong with any."""
    crops, errors = [], []
    for i, value in enumerate(values):
        try:
            img = load_image(value, f"image {i + 1}")
        except RequestError as err:
            errors.append(str(err))
            continue
        if min(img.size) < MIN_IMAGE_SIDE:
            errors.append(f"image {i + 1} is {img.size[0]}x{img.size[1]}: too small "
                          f"(at least {MIN_IMAGE_SIDE} px per side)")
            continue
        crops.append(fit_image(img, side, side))
    if values and not MIN_IMAGES <= len(values) <= MAX_IMAGES:
        errors.append(f"{len(values)} pictures: use {MIN_IMAGES} to {MAX_IMAGES}")
    return crops, errors


def _text_of(value: Any, depth: int = 0) -> list[str]:
    """Every string inside a request (prompt, negative prompt, box phrases, ...)."""
    if isinstance(value, str):
        return [value]
    if depth > 3:
        return []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _text_of(v, depth + 1)]
    if hasattr(value, "__dataclass_fields__"):
        return [s for f in fields(value) for s in _text_of(getattr(value, f.name), depth + 1)]
    return []


# ---------------------------------------------------------------------------- requests
@dataclass
class ConceptTrainRequest:
    """Learn a concept from 3-20 pictures; `steps`/`learning_rate` 0 pick method defaults."""

    name: str = ""
    images: list[Any] = field(default_factory=list)
    method: str = "textual_inversion"
    steps: int = 0
    learning_rate: float = 0.0
    rank: int = 4
    initializer: str = "object"
    semantic_weight: float = 0.5
    bootstrap: int = 2
    resolution: int = 512
    batch_size: int = 2
    sample_steps: int = 10
    prompt: str = ""
    seed: int = -1
    preview_steps: int = 20
    model: str = ""  # the checkpoint to learn on ("" = the default; see Studio.checkpoint)

    @property
    def token(self) -> str:
        return parse_name(self.name)[1]

    def validate(self) -> None:
        self.name = parse_name(self.name)[0]
        if self.method not in METHODS:
            raise RequestError(
                f"unknown training method {self.method!r}; choose one of: {', '.join(METHODS)}"
            )
        self.images = check_image_count(self.images)
        check_number("steps", self.steps, 0, MAX_TRAIN_STEPS, integer=True)
        check_number("learning rate", self.learning_rate, 0, 1)
        check_number("rank", self.rank, 1, 128, integer=True)
        check_number("semantic weight", self.semantic_weight, 0, 1)
        check_number("bootstrap", self.bootstrap, 0, MAX_BOOTSTRAP, integer=True)
        check_number("resolution", self.resolution, 64, 1024, integer=True)
        if int(self.resolution) % 8:
            raise RequestError(f"resolution must be a multiple of 8, got {self.resolution}")
        check_number("batch size", self.batch_size, 1, 16, integer=True)
        check_number("seed", self.seed, -1, MAX_SEED, integer=True)
        check_number("preview steps", self.preview_steps, 0, 150, integer=True)
        check_number("sample steps", self.sample_steps, 1, 50, integer=True)
        check_prompt("prompt", self.prompt, False)
        if not isinstance(self.initializer, str):
            raise RequestError("initializer must be a word, e.g. dog")
        self.initializer = self.initializer.strip()
        if self.method == "textual_inversion" and not self.initializer:
            raise RequestError(
                "textual inversion starts from a word close to the concept: set initializer "
                "to e.g. dog, bird or person"
            )
        if self.method == "seedselect" and int(self.steps) > 150:
            raise RequestError("SeedSelect runs at most 150 optimisation steps")
        self.steps = int(self.steps) or DEFAULT_STEPS[self.method]
        self.learning_rate = float(self.learning_rate) or DEFAULT_LR[self.method]
        self.rank, self.bootstrap = int(self.rank), int(self.bootstrap)
        self.resolution, self.batch_size = int(self.resolution), int(self.batch_size)
        self.seed, self.preview_steps = int(self.seed), int(self.preview_steps)
        self.sample_steps = int(self.sample_steps)
        self.semantic_weight = float(self.semantic_weight)

    def resolve_seed(self) -> int:
        import random

        if self.seed == -1:
            self.seed = random.randint(0, MAX_SEED)
        return self.seed

    def megapixels(self) -> float:
        """The size each training or preview pass works at."""
        return self.resolution * self.resolution / 1e6

    def work(self) -> float:
        """Megapixel-steps of training (forward and backward: about 3 passes) and preview."""
        side = self.resolution * self.resolution / 1e6
        if self.method == "seedselect":
            return (self.steps + self.bootstrap * max(1, self.steps // 5)) * 3 * \
                self.sample_steps * side * 2
        return self.steps * self.batch_size * side * 3 + self.preview_steps * side * 2

    @property
    def subject(self) -> str:
        """What the prompts call the concept: the token, plus the class word for LoRA."""
        if self.method == "lora" and self.initializer and self.initializer != "object":
            return f"{self.token} {self.initializer}"
        return self.token

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["images"] = len(self.images)
        d["task"] = "concept_train"
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConceptTrainRequest:
        return request_from_dict(cls, data, "concept_train")


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
    """("textual_inversion", tensor [n, dim]) or ("lora", state dict), else a clear error."""
    if "string_to_param" in state:  # A1111 .pt
        params = state["string_to_param"]
        tensor = params.get("*") if isinstance(params, dict) else None
        if not isinstance(tensor, torch.Tensor):
            raise RequestError("A1111 embedding without a tensor under string_to_param['*']")
        return "textual_inversion", tensor
    if "emb_params" in state:  # A1111 .safetensors
        return "textual_inversion", state["emb_params"]
    if {"clip_l", "clip_g"} & set(state):
        raise RequestError(
            "this is an SDXL embedding (clip_l/clip_g); the studio's models are the SD1.5 family"
        )
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


# ---------------------------------------------------------------------------- the manager
class ConceptManager:
    """The library folder, training/import into it, and the hook applying concepts."""

    def __init__(self, registry: ModelRegistry, folder: Path) -> None:
        self.registry = registry
        self.folder = Path(folder)
        self._lock = threading.RLock()
        self._cache: tuple[int, list[Concept]] | None = None
        # name -> (uid, the text encoder holding it): reapplied after a new version or a reload
        self._embeddings: dict[str, tuple[str, weakref.ref]] = {}
        self._warned: set[str] = set()
        if self.hook not in registry.hooks:
            registry.hooks.append(self.hook)

    # ------------------------------------------------------------------ library
    def list(self) -> list[Concept]:
        """Finished concepts, sorted by name (hidden temporary folders are never listed)."""
        with self._lock:
            if not self.folder.is_dir():
                return []
            stamp = self.folder.stat().st_mtime_ns
            if self._cache is not None and self._cache[0] == stamp:
                return list(self._cache[1])
            concepts = []
            for sub in sorted(self.folder.iterdir()):
                if sub.name.startswith(".") or not (sub / CONCEPT_FILE).is_file():
                    continue
                try:
                    concepts.append(Concept.read(sub))
                except (OSError, ValueError, KeyError, TypeError) as err:
                    log.warning("skipping unreadable concept folder %s: %s", sub, err)
            self._cache = (stamp, concepts)
            return list(concepts)

    def get(self, name: str) -> Concept:
        key, _ = parse_name(name)
        for concept in self.list():
            if concept.name == key:
                return concept
        known = ", ".join(c.token for c in self.list()) or "none yet"
        raise RequestError(f"no concept named {name!r} in the library (known: {known})")

    def exists(self, name: str) -> bool:
        return (self.folder / name).exists()

    def delete(self, name: str) -> None:
        """Remove a concept's folder (atomically hidden first, then deleted)."""
        concept = self.get(name)
        with self._lock:
            trash = self.folder / f".trash-{concept.name}-{uuid.uuid4().hex[:8]}"
            os.replace(concept.folder, trash)
            shutil.rmtree(trash, ignore_errors=True)
            self._embeddings.pop(concept.name, None)
            self._cache = None

    def _check_new(self, name: str) -> None:
        if self.exists(name):
            raise RequestError(
                f"a concept named {name!r} already exists in the library; choose another name "
                "or delete the existing one first"
            )

    def _commit(self, name: str, write: Callable[[Path], dict[str, Any]]) -> Concept:
        """Build the concept in a hidden temp folder with `write`, then move it into place."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            meta = write(tmp)
            # the family it was trained on or checked against: it applies to that one only
            meta.setdefault("family", self.registry.family.name)
            meta.update(version=FORMAT_VERSION, name=name, uid=uuid.uuid4().hex,
                        created=time.strftime("%Y-%m-%dT%H:%M:%S"))
            (tmp / CONCEPT_FILE).write_text(json.dumps(meta, indent=2, default=str))
            fsync_tree(tmp)  # on disk before it becomes visible: a crash leaves no half concept
            with self._lock:
                self._check_new(name)
                os.replace(tmp, self.folder / name)
                self._cache = None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return self.get(name)

    @staticmethod
    def _write_examples(folder: Path, images: list[Image.Image]) -> None:
        (folder / EXAMPLES_DIR).mkdir()
        (folder / THUMBS_DIR).mkdir()
        for i, img in enumerate(images):
            ex = img.copy()
            ex.thumbnail((EXAMPLE_MAX_SIDE, EXAMPLE_MAX_SIDE), Image.Resampling.LANCZOS)
            ex.save(folder / EXAMPLES_DIR / f"{i:02d}.png")
            th = img.copy()
            th.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
            th.save(folder / THUMBS_DIR / f"{i:02d}.png")

    # ------------------------------------------------------------------ applying
    def hook(self, pipe: Any, req: Any, unet_role: str) -> dict[str, float]:
        """Registry hook: load the concepts the request mentions; return LoRAs to activate."""
        concepts = self.list()
        if not concepts:
            return {}
        text = " ".join(_text_of(req)).lower()
        active: dict[str, float] = {}
        for concept in concepts:
            if concept.token in text:
                active.update(self.apply(concept, pipe, unet_role))
        return active

    def apply(self, concept: Concept, pipe: Any, unet_role: str = "unet") -> dict[str, float]:
        """Make `concept` usable by `pipe` (load once into the shared models)."""
        family = self.registry.family
        made_for = str(concept.details.get("family", "sd15"))  # older concepts: SD1.5
        if made_for != family.name:
            raise RequestError(
                f"concept {concept.token} was made for {made_for} models and these are "
                f"{family.label} ({family.name}): an embedding or LoRA only fits the family it "
                "was trained for. Train or import it again for these models, or leave it out "
                "of the prompt."
            )
        with self._lock:
            if concept.method == "textual_inversion":
                self._ensure_embedding(concept, pipe)
            elif concept.method == "lora":
                if not hasattr(pipe, "load_lora_weights"):
                    if concept.name not in self._warned:
                        log.warning("%s cannot load LoRAs; %s is ignored there",
                                    type(pipe).__name__, concept.token)
                        self._warned.add(concept.name)
                    return {}
                try:
                    self.registry.ensure_lora(unet_role, concept.adapter,
                                              str(concept.path("lora")), pipe)
                except (ValueError, KeyError, RuntimeError) as err:
                    raise StudioError(
                        f"the LoRA of concept {concept.token} could not be loaded into the "
                        f"{unet_role} model: {err}"
                    ) from err
                return {concept.adapter: float(concept.details.get("weight", 1.0))}
            return {}

    def _ensure_embedding(self, concept: Concept, pipe: Any) -> None:
        """Add the concept's token(s) to the shared tokenizer/text encoder (once)."""
        from diffusers.loaders import TextualInversionLoaderMixin
        from safetensors.torch import load_file

        tokenizer, text_encoder = pipe.tokenizer, pipe.text_encoder
        known = self._embeddings.get(concept.name)
        if known is not None and known[0] == concept.uid and known[1]() is text_encoder:
            return
        vectors = load_file(str(concept.path("embedding")))[concept.token]
        vectors = vectors.reshape(-1, vectors.shape[-1])
        tokens = [concept.token] + [f"{concept.token}_{i}" for i in range(1, len(vectors))]
        if all(t not in tokenizer.get_vocab() for t in tokens):
            TextualInversionLoaderMixin.load_textual_inversion(
                pipe, {concept.token: vectors}, token=concept.token, tokenizer=tokenizer,
                text_encoder=text_encoder,
            )
        else:  # the token is known from an earlier version, or the encoder was reloaded
            tokenizer.add_tokens([t for t in tokens if t not in tokenizer.get_vocab()])
            if text_encoder.get_input_embeddings().num_embeddings < len(tokenizer):
                text_encoder.resize_token_embeddings(len(tokenizer))
            weight = text_encoder.get_input_embeddings().weight
            with torch.no_grad():
                for token, vec in zip(tokens, vectors, strict=True):
                    weight[tokenizer.convert_tokens_to_ids(token)] = vec.to(weight)
        text_encoder.get_input_embeddings().requires_grad_(False)
        self._embeddings[concept.name] = (concept.uid, weakref.ref(text_encoder))
        self.registry.stats["concept_embedding_load"] += 1
        log.info("textual inversion %s loaded into the shared text encoder", concept.token)

    # ------------------------------------------------------------------ training
    def train(
        self,
        req: ConceptTrainRequest,
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
    ) -> tuple[Concept, dict[str, Any], Image.Image | None, Any]:
        """Learn a concept and add it to the library.

        Returns (concept, info, preview image or None, the request that made the preview).
        Nothing is written unless training finished: cancel leaves the library unchanged.
        """
        req.validate()
        req.resolve_seed()
        self._check_new(req.name)
        images = prepare_images(req.images, req.resolution)
        registry = self.registry
        t0 = time.perf_counter()
        if req.method == "seedselect":
            return self._train_seedselect(req, images, progress, cancel)
        pipe = base_pipeline(registry)
        if registry.loras("unet"):
            pipe.disable_lora()  # learn against the plain base UNet (no LCM, no other concept)
        if req.method == "textual_inversion":
            if not training.initializer_ids(pipe.tokenizer, req.initializer):
                raise RequestError(f"initializer {req.initializer!r} gives no tokens")
            result = run_guarded(registry, lambda: training.train_textual_inversion(
                pipe, registry, images, req.token, req.initializer, req.steps,
                req.learning_rate, req.seed, req.batch_size, progress, cancel,
                registry.model_set.templates), cancel)

            def write(tmp: Path) -> dict[str, Any]:
                from safetensors.torch import save_file

                save_file({req.token: result.embedding}, str(tmp / EMBEDDING_FILE))
                return {"files": {"embedding": EMBEDDING_FILE}}
        else:
            adapter = f"training-{req.name}-{uuid.uuid4().hex[:6]}"
            result = run_guarded(registry, lambda: training.train_lora(
                pipe, registry, images, req.subject, adapter, req.steps, req.learning_rate,
                req.rank, req.seed, req.batch_size, progress, cancel,
                registry.model_set.templates), cancel)

            def write(tmp: Path) -> dict[str, Any]:
                # the family's pipeline class writes LoRAs in its own layout
                type(pipe).save_lora_weights(
                    tmp, unet_lora_layers=result.lora_state, weight_name=LORA_FILE,
                    safe_serialization=True)
                return {"files": {"lora": LORA_FILE}, "lora": result.lora_config,
                        "prompt_subject": req.subject}
        seconds = time.perf_counter() - t0
        info = _loss_summary(result.losses, result.probe_losses)
        info.update(method=req.method, steps=req.steps, learning_rate=req.learning_rate,
                    seconds=round(seconds, 2))

        def write_all(tmp: Path) -> dict[str, Any]:
            meta = write(tmp)
            self._write_examples(tmp, images)
            meta.update(token=req.token, method=req.method, source="trained",
                        images=len(images), training={**req.to_dict(), **info})
            return meta

        concept = self._commit(req.name, write_all)
        return concept, info, None, None

    def _train_seedselect(self, req: ConceptTrainRequest, images: list[Image.Image],
                          progress: ProgressFn | None, cancel: CancelToken | None,
                          ) -> tuple[Concept, dict[str, Any], Image.Image, Any]:
        prompt = req.prompt or (f"a photo of {req.initializer}" if req.initializer else "")
        ss = SeedSelectRequest(
            prompt=prompt, images=images, seed=req.seed, steps=req.steps,
            semantic_weight=req.semantic_weight, bootstrap=req.bootstrap,
            learning_rate=req.learning_rate, width=req.resolution, height=req.resolution,
            sample_steps=req.sample_steps,
        )
        ss.validate()
        registry = self.registry
        pipe = base_pipeline(registry)
        configure_pipe(registry, pipe, ss, "unet")
        out = run_guarded(registry, lambda: run_seedselect(
            registry, pipe, ss, images, None, progress, cancel), cancel)
        rendered = render_noises(registry, pipe, ss, out.noises, ss.sample_steps, cancel)
        info = {"method": "seedselect", **out.info()}

        def write_all(tmp: Path) -> dict[str, Any]:
            from safetensors.torch import save_file

            save_file(noise_dict(out.noises), str(tmp / NOISE_FILE), metadata=noise_metadata(ss))
            self._write_examples(tmp, images)
            return {"files": {"noises": NOISE_FILE}, "token": req.token, "method": "seedselect",
                    "source": "trained", "images": len(images), "prompt": prompt,
                    "sample_steps": ss.sample_steps, "width": ss.width, "height": ss.height,
                    "guidance_scale": ss.guidance_scale, "noises": len(out.noises),
                    "training": {**req.to_dict(), "loss_initial": info["loss_initial"],
                                 "loss_final": info["loss_final"]}}

        concept = self._commit(req.name, write_all)
        ss.images = images  # the Studio records them next to the image it saves
        info["extra_images"] = rendered[1:]
        return concept, info, rendered[0], ss

    # ------------------------------------------------------------------ importing
    def import_file(self, path: str | Path, name: str = "") -> Concept:
        """Import a textual-inversion embedding or a LoRA file (safetensors, or weights-only)."""
        path = Path(path)
        if not name:
            name = re.sub(r"[^a-z0-9_-]+", "-", path.stem.lower()).strip("-_")[:32]
        name, token = parse_name(name)
        self._check_new(name)
        state, metadata = read_weights_file(path)
        kind, payload = classify(state)
        if kind == "textual_inversion":
            if not isinstance(payload, torch.Tensor) or payload.ndim not in (1, 2):
                raise RequestError("the embedding must be a tensor of vectors [n, dim]")
            count = 1 if payload.ndim == 1 else payload.shape[0]
            if count > MAX_EMBEDDING_VECTORS:
                raise RequestError(
                    f"this embedding has {count} vectors; at most {MAX_EMBEDDING_VECTORS} fit "
                    "in a prompt (each vector takes one of its 75 tokens)"
                )
            vectors = payload.detach().float().reshape(-1, payload.shape[-1]).contiguous()
            dim = self.registry.component("text_encoder").get_input_embeddings().embedding_dim
            if vectors.shape[-1] != dim:
                raise RequestError(
                    f"this embedding has vectors of size {vectors.shape[-1]} but the text "
                    f"encoder of the current models uses {dim}: it was made for another model "
                    "family"
                )

            def write(tmp: Path) -> dict[str, Any]:
                from safetensors.torch import save_file

                save_file({token: vectors}, str(tmp / EMBEDDING_FILE))
                return {"files": {"embedding": EMBEDDING_FILE}, "vectors": len(vectors)}
        else:
            unet_state, dropped = _unet_lora_only(payload)

            def write(tmp: Path) -> dict[str, Any]:
                from safetensors.torch import save_file

                save_file(unet_state, str(tmp / LORA_FILE), metadata=metadata or None)
                out: dict[str, Any] = {"files": {"lora": LORA_FILE}}
                if dropped:
                    out["note"] = (f"{dropped} text-encoder LoRA tensors were left out: the text "
                                   "encoder is shared by every tab")
                return out

        def write_all(tmp: Path) -> dict[str, Any]:
            meta = write(tmp)
            (tmp / THUMBS_DIR).mkdir()
            (tmp / EXAMPLES_DIR).mkdir()
            meta.update(token=token, method=kind, source="imported", original_file=path.name)
            return meta

        concept = self._commit(name, write_all)
        if kind == "lora":
            self._check_lora_loads(concept)
        return concept

    def _check_lora_loads(self, concept: Concept) -> None:
        """Load an imported LoRA into the base UNet now, so a bad file fails here, clearly."""
        try:
            self.apply(concept, base_pipeline(self.registry), "unet")
        except (StudioError, ValueError, KeyError, RuntimeError, OSError) as err:
            self.delete(concept.name)
            raise RequestError(
                f"'{concept.details.get('original_file')}' does not fit the current UNet and "
                f"was not imported: {err}"
            ) from err


def _unet_lora_only(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Drop text-encoder LoRA tensors (the text encoder is shared by every tab)."""
    keep = {k: v.contiguous() for k, v in state.items()
            if isinstance(v, torch.Tensor) and not k.startswith(TEXT_ENCODER_LORA_PREFIXES)}
    dropped = sum(1 for k in state if k.startswith(TEXT_ENCODER_LORA_PREFIXES))
    if not keep:
        raise RequestError("this LoRA has only text-encoder weights; the studio needs UNet ones")
    return keep, dropped


def _loss_summary(losses: list[float], probe: list[tuple[int, float]]) -> dict[str, Any]:
    k = max(1, min(10, len(losses) // 4))
    first = sum(losses[:k]) / k
    last = sum(losses[-k:]) / k
    return {
        "loss_first": round(first, 6), "loss_last": round(last, 6),
        "losses": [round(x, 6) for x in losses],
        "probe_losses": [[s, round(v, 6)] for s, v in probe],
    }
