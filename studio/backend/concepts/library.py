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

The request (`request.py`) and the on-disk format and file imports (`store.py`) live beside
this module; the training loops are in `training.py` and SeedSelect in `seedselect.py`.
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
from ..models.registry import ModelRegistry
from ..requests import (
    RequestError,
)
from . import training
from .request import THUMB_SIDE, ConceptTrainRequest, parse_name, prepare_images, text_of
from .seedselect import (
    SeedSelectRequest,
    noise_dict,
    noise_metadata,
    render_noises,
    run_seedselect,
)
from .store import (
    CONCEPT_FILE,
    EMBEDDING_FILE,
    EXAMPLES_DIR,
    FORMAT_VERSION,
    LORA_FILE,
    NOISE_FILE,
    THUMBS_DIR,
    Concept,
    classify,
    fsync_tree,
    read_weights_file,
    unet_lora_only,
)

log = logging.getLogger(__name__)

EXAMPLE_MAX_SIDE = 1024
MAX_EMBEDDING_VECTORS = 75  # a prompt holds 75 tokens; one vector takes one


# ---------------------------------------------------------------------------- the manager
class ConceptManager:
    """The library folder, training/import into it, and the hook applying concepts."""

    def __init__(self, registry: ModelRegistry, folder: Path) -> None:
        self.registry = registry
        self.folder = Path(folder)
        self._lock = threading.RLock()
        self._cache: tuple[int, list[Concept]] | None = None
        # name -> (uid, the text encoder holding it): reapplied after a new version or a reload
        self._embeddings: dict[str, tuple[str, list[weakref.ref]]] = {}
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
        text = " ".join(text_of(req)).lower()
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
        """Add the concept's token(s) to the shared tokenizer(s)/text encoder(s), once: SDXL
        learns the token in both (its clip_l and clip_g vectors)."""
        from safetensors.torch import load_file

        parts = self.registry.family.embedding_parts
        encoders = [getattr(pipe, encoder) for _, _, encoder in parts]
        known = self._embeddings.get(concept.name)
        if known is not None and known[0] == concept.uid and [r() for r in known[1]] == encoders:
            return
        state = load_file(str(concept.path("embedding")))
        if concept.token in state:  # SD1.5's {token: vectors}
            state = {parts[0][0]: state[concept.token]}
        for (key, tokenizer_role, _), text_encoder in zip(parts, encoders, strict=True):
            self._learn_token(concept, pipe, getattr(pipe, tokenizer_role), text_encoder,
                              state[key])
        self._embeddings[concept.name] = (concept.uid, [weakref.ref(e) for e in encoders])
        self.registry.stats["concept_embedding_load"] += 1
        log.info("textual inversion %s loaded into the shared text encoder(s)", concept.token)

    @staticmethod
    def _learn_token(concept: Concept, pipe: Any, tokenizer: Any, text_encoder: Any,
                     vectors: torch.Tensor) -> None:
        """One text encoder learns the token (and `<token>_1`... for more vectors)."""
        from diffusers.loaders import TextualInversionLoaderMixin

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

                # one encoder: diffusers' {token: vectors}; SDXL: {clip_l, clip_g}, as sites
                # share them (the import reads both)
                parts = result.embedding
                tensors = parts if len(parts) > 1 else {req.token: next(iter(parts.values()))}
                save_file(tensors, str(tmp / EMBEDDING_FILE))
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
            parts = self._embedding_parts(payload)

            def write(tmp: Path) -> dict[str, Any]:
                from safetensors.torch import save_file

                # SD1.5: {token: vectors} (diffusers' format); SDXL: {clip_l, clip_g}
                tensors = parts if len(parts) > 1 else {token: next(iter(parts.values()))}
                save_file(tensors, str(tmp / EMBEDDING_FILE))
                return {"files": {"embedding": EMBEDDING_FILE},
                        "vectors": len(next(iter(parts.values())))}
        else:
            unet_state, dropped = unet_lora_only(payload)

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

    def _embedding_parts(self, payload: Any) -> dict[str, torch.Tensor]:
        """An imported embedding as the current family's parts ({file key: [n, dim]}),
        checked: the family's parts, the widths of its text encoders, one count of vectors."""
        family = self.registry.family
        wanted = [key for key, _, _ in family.embedding_parts]
        if isinstance(payload, dict) and set(payload) != set(wanted):
            raise RequestError(
                f"this is an SDXL embedding ({', '.join(sorted(payload))}) and the models are "
                f"{family.label}: choose an SDXL model (the picker, or `model`) and import it "
                "again" if len(wanted) == 1 else
                f"this embedding has {', '.join(sorted(payload))} but {family.label} needs "
                f"{' and '.join(wanted)}")
        if isinstance(payload, torch.Tensor):
            if len(wanted) > 1:
                raise RequestError(
                    f"this embedding holds one text encoder's vectors (SD1.5's format) and "
                    f"{family.label} models need {' and '.join(wanted)}: choose an SD1.5 "
                    "model and import it again, or import the SDXL version of the embedding")
            payload = {wanted[0]: payload}
        parts: dict[str, torch.Tensor] = {}
        for key, _, encoder_role in family.embedding_parts:
            tensor = payload[key]
            if tensor.ndim not in (1, 2):
                raise RequestError("the embedding must be a tensor of vectors [n, dim]")
            vectors = tensor.detach().float().reshape(-1, tensor.shape[-1]).contiguous()
            if len(vectors) > MAX_EMBEDDING_VECTORS:
                raise RequestError(
                    f"this embedding has {len(vectors)} vectors; at most "
                    f"{MAX_EMBEDDING_VECTORS} fit in a prompt (each vector takes one of its 75 "
                    "tokens)")
            dim = self.registry.component(encoder_role).get_input_embeddings().embedding_dim
            if vectors.shape[-1] != dim:
                raise RequestError(
                    f"this embedding has vectors of size {vectors.shape[-1]} but the text "
                    f"encoder of the current models uses {dim}: it was made for another model "
                    "family")
            parts[key] = vectors
        if len({len(v) for v in parts.values()}) > 1:
            raise RequestError("the embedding's clip_l and clip_g hold different numbers of "
                               "vectors")
        return parts

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


def _loss_summary(losses: list[float], probe: list[tuple[int, float]]) -> dict[str, Any]:
    k = max(1, min(10, len(losses) // 4))
    first = sum(losses[:k]) / k
    last = sum(losses[-k:]) / k
    return {
        "loss_first": round(first, 6), "loss_last": round(last, 6),
        "losses": [round(x, 6) for x in losses],
        "probe_losses": [[s, round(v, 6)] for s, v in probe],
    }
