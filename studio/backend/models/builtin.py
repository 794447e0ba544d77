"""The built-in model sets (the trained toy world, the random tiny set) and `--models` choice."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ...settings import Settings
from .families import detect_family, get_family
from .families.sd15 import MODEL_SET as SD15
from .families.sdxl import MODEL_SET as SDXL
from .modelsets import ModelSet, local_repos
from .tiny import build_lock, ensure_tiny_set

log = logging.getLogger(__name__)

TOY_DIR = Path(__file__).resolve().parents[3] / "assets" / "toy"
TOY_XL_DIR = TOY_DIR.parent / "toy-xl"  # the toy world at SDXL's architecture


def toy_available(root: Path | None = None) -> bool:
    """True when the toy models are on disk (they ship in assets/toy)."""
    return (Path(root or TOY_DIR) / "stable-diffusion" / "model_index.json").exists()


def toy_model_set(cache_dir: Path, root: Path | None = None) -> ModelSet:
    """The trained toy world (flat coloured shapes at 64 px) shipped in `assets/toy`.

    One ControlNet, trained on scribbles and edge maps, serves both the scribble and canny
    types; there is no depth or pose ControlNet and no LCM-LoRA (the models are fast anyway).
    Annotators with weights (depth, pose, SAM) use the tiny random ones so every tab works
    offline; Canny is classical and real.
    """
    root = Path(root or TOY_DIR)
    if not toy_available(root):
        raise FileNotFoundError(
            f"the toy models are missing from {root}: they ship with the project in "
            "assets/toy (rebuild them with `python -m toyworld.train` stages, see README)"
        )
    annotators = tiny_annotator_sources(Path(cache_dir) / "toy-annotators")
    # trained ones where they ship: clicks and words select the right shape
    trained = {"sam": root / "sam" / "sam_toy.safetensors", "grounding": root / "detector"}
    if annotators is not None:
        annotators = {**annotators, **{name: str(path) for name, path in trained.items()
                                       if path.exists()}}
    return ModelSet(
        name="toy",
        repos=local_repos(root, aliases={"controlnet:canny": "controlnet:scribble"}),
        annotators=annotators,
        offline_models=True,
        native_size=64,
        # the toy GLIGEN was trained to ground every step; handing the last 70% to the base
        # UNet (SD1.5 GLIGEN's 0.3) lets it recolour and move the objects: measured over 32
        # layouts, right colour in its box 45% at 0.3, 78% at 0.6, 93% at 1.0
        gligen_fraction=1.0,
        concept_templates=("a {}",),  # the toy captions' grammar: "a red circle"
        upscalers_dir=str(root / "upscalers"),  # the toy 2x upscaler (train_upscaler)
        description="a trained miniature world of flat coloured shapes at 64x64 px: try "
        "'a red circle and a blue square'",
    )


def toy_xl_available(root: Path | None = None) -> bool:
    """True when the toy SDXL models are on disk (they ship in assets/toy-xl)."""
    return (Path(root or TOY_XL_DIR) / "stable-diffusion" / "model_index.json").exists()


def toy_xl_model_set(cache_dir: Path, root: Path | None = None) -> ModelSet:
    """The toy world at SDXL's architecture (`--models toy-xl`, `toyworld.train_xl`): two text
    encoders, `text_time` conditioning, an SDXL ControlNet (scribble and canny), inpainting
    and InstructPix2Pix UNets. The toy VAE is shared with `toy`, so the toy set's preview
    decoder, SAM and detector serve it too."""
    root = Path(root or TOY_XL_DIR)
    if not toy_xl_available(root):
        raise FileNotFoundError(
            f"the toy SDXL models are missing from {root}: they ship with the project in "
            "assets/toy-xl (rebuild them with `python -m toyworld.train_xl` stages, see README)")
    toy = toy_model_set(cache_dir) if toy_available() else None
    repos = local_repos(root, aliases={"controlnet:canny": "controlnet:scribble"})
    # the toy set's preview decoder (same VAE) and CLIP image tower (SeedSelect's judge)
    for key in ("taesd", "image_encoder"):
        if toy is not None and toy.get(key):
            repos[key] = toy.get(key)
    return ModelSet(
        name="toy-xl",
        family="sdxl",
        repos=repos,
        annotators=toy.annotators if toy is not None else None,
        offline_models=True,
        native_size=64,
        concept_templates=("a {}",),
        upscalers_dir=toy.upscalers_dir if toy is not None else "",
        description="the toy world (flat coloured shapes at 64x64 px) on SDXL's architecture: "
        "try 'a red circle and a blue square'",
    )


def tiny_model_set(cache_dir: Path) -> ModelSet:
    """The random tiny set, built on first use under `cache_dir`."""
    root = ensure_tiny_set(cache_dir)
    return ModelSet(
        name="tiny",
        repos=local_repos(root),
        annotators=tiny_annotator_sources(root),
        offline_models=True,
        description="random weights: images are noise, for wiring and tests",
    )


def tiny_xl_model_set(cache_dir: Path) -> ModelSet:
    """The random tiny SDXL set (`--models tiny-xl`), built on first use under `cache_dir`."""
    from .tiny_xl import ensure_tiny_xl_set

    root = ensure_tiny_xl_set(cache_dir)
    return ModelSet(
        name="tiny-xl",
        family="sdxl",
        repos=local_repos(root),
        annotators=tiny_annotator_sources(Path(cache_dir) / "toy-annotators"),
        offline_models=True,
        native_size=64,
        description="random SDXL-architecture weights: images are noise, for wiring and tests",
    )


def tiny_annotator_sources(root: Path) -> dict[str, str] | None:
    """Tiny random annotator weights (depth, openpose, SAM, grounding), built once under
    `root` (again when an older build lacks one)."""
    try:
        from annotators.tiny import BUILT, VERSION, build_tiny_annotator_weights
    except ImportError:  # an annotators package without tiny weights
        return None
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ann_root = root / "annotators"
    marker = ann_root / "SOURCES.json"

    def complete() -> bool:  # built, by this version of the tiny annotators
        version = ann_root / "VERSION"
        return (marker.exists() and set(BUILT) <= set(json.loads(marker.read_text()))
                and version.is_file() and version.read_text() == VERSION)

    if not complete():
        with build_lock(root):
            if not complete():
                tmp = Path(tempfile.mkdtemp(prefix=".ann-build-", dir=root))
                try:
                    sources = build_tiny_annotator_weights(tmp)
                    # paths point into the final folder, not the temporary one
                    sources = {
                        k: str(ann_root / Path(v).relative_to(tmp)) for k, v in sources.items()
                    }
                    (tmp / "SOURCES.json").write_text(json.dumps(sources))
                    (tmp / "VERSION").write_text(VERSION)
                    if ann_root.exists():
                        shutil.rmtree(ann_root)
                    os.replace(tmp, ann_root)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    return json.loads(marker.read_text())


def sd15_available(settings: Settings) -> bool:
    """True when the SD1.5 base weights are cached, or the Hub answers (and we may use it)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(SD15.base, "model_index.json")
        if isinstance(cached, str):
            return True
    except Exception:  # noqa: BLE001 - a broken cache just means "not cached"
        pass
    if settings.offline:
        return False
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(SD15.base, timeout=3)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


def builtin_choices(settings: Settings, default: ModelSet
                    ) -> dict[str, tuple[str, Callable[[], ModelSet]]]:
    """The built-in sets the model picker offers besides the default: the trained toy
    world when it ships, and, on a studio running a random tiny set (tests, wiring), the
    tiny set of each family."""
    cache = settings.cache_dir
    out: dict[str, tuple[str, Callable[[], ModelSet]]] = {}
    if toy_available():
        out["toy"] = ("sd15", lambda: toy_model_set(cache))
    if toy_xl_available():
        out["toy-xl"] = ("sdxl", lambda: toy_xl_model_set(cache))
    if default.name in ("tiny", "tiny-xl"):
        out["tiny"] = ("sd15", lambda: tiny_model_set(cache))
        out["tiny-xl"] = ("sdxl", lambda: tiny_xl_model_set(cache))
    out.pop(default.name, None)
    return out


def resolve_model_set(settings: Settings) -> ModelSet:
    """Turn `--models` into a ModelSet ("auto" falls back to built-in offline models)."""
    choice = settings.models
    if choice == "tiny":
        return tiny_model_set(settings.cache_dir)
    if choice == "toy":
        return toy_model_set(settings.cache_dir)
    if choice == "tiny-xl":
        return tiny_xl_model_set(settings.cache_dir)
    if choice == "toy-xl":
        return toy_xl_model_set(settings.cache_dir)
    if choice == "sdxl":
        ms = SDXL
    elif choice == "sd15":
        ms = SD15
    elif choice == "auto":
        if sd15_available(settings):
            ms = SD15
        else:
            log.warning("SD1.5 weights unavailable (not cached, Hub unreachable): offline models")
            if toy_available():
                return toy_model_set(settings.cache_dir)
            return tiny_model_set(settings.cache_dir)
    else:  # a local path used as the base model, of the family its files say
        path = str(Path(choice).resolve())
        ms = get_family(detect_family(path)).model_set.with_base(path)
    if settings.base_model:
        if Path(settings.base_model).exists():  # a local folder or file says its family
            family = detect_family(str(settings.base_model))
            if family != ms.family:
                raise ValueError(
                    f"--base-model {settings.base_model} is a {family} model but the "
                    f"{ms.name} set is {ms.family}: start with --models {family} (or "
                    f"--models {settings.base_model})")
        ms = ms.with_base(settings.base_model)
    return ms
