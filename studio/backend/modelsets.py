"""Where each model comes from, per model set (sd15 Hub ids, the built-in tiny folder, local)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

CONTROL_TYPES = ("scribble", "openpose", "depth", "canny")


@dataclass(frozen=True)
class ModelSet:
    """Sources (Hub repo ids or local paths) for every model role the studio uses."""

    name: str
    base: str
    inpaint: str
    instruct: str
    gligen: str
    gligen_inpaint: str
    controlnets: dict[str, str]
    lcm_lora: str
    image_encoder: str
    annotators: dict[str, str] | None = None  # None = the annotators' own Hub defaults
    offline_models: bool = False  # True for built-in test/toy models: the UI shows a banner
    native_size: int = 512  # the image side the models were trained at (UI default)
    # share of the steps GLIGEN grounds by default (layout.DEFAULT_FRACTION for SD1.5's GLIGEN)
    gligen_fraction: float = 0.3
    # captions a concept's token is trained in (empty: photo captions, as for SD1.5)
    concept_templates: tuple[str, ...] = ()
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def source(self, role: str) -> str:
        """Source for a role name such as "unet", "unet_inpaint", "controlnet:depth"."""
        if role.startswith("controlnet:"):
            ctype = role.split(":", 1)[1]
            if ctype not in self.controlnets:
                raise ValueError(
                    f"unknown control type {ctype!r}; known: {', '.join(sorted(self.controlnets))}"
                )
            return self.controlnets[ctype]
        mapping = {
            "unet": self.base, "vae": self.base, "text_encoder": self.base,
            "tokenizer": self.base, "scheduler": self.base,
            "unet_inpaint": self.inpaint, "unet_instruct": self.instruct,
            "unet_gligen": self.gligen, "unet_gligen_inpaint": self.gligen_inpaint,
            "lcm_lora": self.lcm_lora, "image_encoder": self.image_encoder,
        }
        if role not in mapping:
            raise ValueError(f"unknown model role {role!r}")
        return mapping[role]

    @property
    def templates(self) -> tuple[str, ...]:
        """Caption templates for concept training ("a photo of {}" ... for photo models)."""
        if self.concept_templates:
            return self.concept_templates
        from .training import TEMPLATES

        return TEMPLATES

    def with_base(self, base: str) -> ModelSet:
        return replace(self, base=base)


SD15 = ModelSet(
    name="sd15",
    base="stable-diffusion-v1-5/stable-diffusion-v1-5",
    inpaint="stable-diffusion-v1-5/stable-diffusion-inpainting",
    instruct="timbrooks/instruct-pix2pix",
    gligen="masterful/gligen-1-4-generation-text-box",
    gligen_inpaint="masterful/gligen-1-4-inpainting-text-box",
    controlnets={
        "scribble": "lllyasviel/control_v11p_sd15_scribble",
        "openpose": "lllyasviel/control_v11p_sd15_openpose",
        "depth": "lllyasviel/control_v11f1p_sd15_depth",
        "canny": "lllyasviel/control_v11p_sd15_canny",
    },
    lcm_lora="latent-consistency/lcm-lora-sdv1-5",
    # SD1.5's text encoder is CLIP ViT-L/14; its image tower embeds images in the same space.
    image_encoder="openai/clip-vit-large-patch14",
    description="Stable Diffusion 1.5 family (downloaded from the Hugging Face Hub on first use)",
)


TOY_DIR = Path(__file__).resolve().parents[2] / "assets" / "toy"


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

    def p(name: str) -> str:
        return str(root / name)

    control = p("controlnet-scribble")
    return ModelSet(
        name="toy",
        base=p("stable-diffusion"),
        inpaint=p("stable-diffusion-inpainting"),
        instruct=p("instruct-pix2pix"),
        gligen=p("gligen-generation-text-box"),
        gligen_inpaint=p("gligen-inpainting-text-box"),
        controlnets={"scribble": control, "canny": control},
        lcm_lora="",
        image_encoder=p("clip-vision"),
        annotators=_tiny_annotator_sources(Path(cache_dir) / "toy-annotators"),
        offline_models=True,
        native_size=64,
        # the toy GLIGEN was trained to ground every step; handing the last 70% to the base
        # UNet (SD1.5 GLIGEN's 0.3) lets it recolour and move the objects: measured over 32
        # layouts, right colour in its box 45% at 0.3, 78% at 0.6, 93% at 1.0
        gligen_fraction=1.0,
        concept_templates=("a {}",),  # the toy captions' grammar: "a red circle"
        description="a trained miniature world of flat coloured shapes at 64x64 px: try "
        "'a red circle and a blue square'",
    )


def tiny_model_set(cache_dir: Path) -> ModelSet:
    """The random tiny set, built on first use under `cache_dir`."""
    from .tiny import CONTROL_TYPES as TINY_TYPES
    from .tiny import REPOS, ensure_tiny_set

    root = ensure_tiny_set(cache_dir)

    def p(key: str) -> str:
        return str(root / REPOS[key])

    annotators = _tiny_annotator_sources(root)
    return ModelSet(
        name="tiny",
        base=p("base"),
        inpaint=p("inpaint"),
        instruct=p("instruct"),
        gligen=p("gligen"),
        gligen_inpaint=p("gligen_inpaint"),
        controlnets={t: p(f"controlnet_{t}") for t in TINY_TYPES},
        lcm_lora=p("lcm_lora"),
        image_encoder=p("image_encoder"),
        annotators=annotators,
        offline_models=True,
        description="random weights: images are noise, for wiring and tests",
    )


def _tiny_annotator_sources(root: Path) -> dict[str, str] | None:
    """Tiny random annotator weights (depth, openpose, SAM), built once next to the tiny set."""
    import json
    import os
    import shutil
    import tempfile

    from .tiny import build_lock

    try:
        from annotators.tiny import build_tiny_annotator_weights
    except ImportError:  # an annotators package without tiny weights
        return None
    root.mkdir(parents=True, exist_ok=True)
    ann_root = root / "annotators"
    marker = ann_root / "SOURCES.json"
    if not marker.exists():
        with build_lock(root):
            if not marker.exists():
                tmp = Path(tempfile.mkdtemp(prefix=".ann-build-", dir=root))
                try:
                    sources = build_tiny_annotator_weights(tmp)
                    # paths point into the final folder, not the temporary one
                    sources = {
                        k: str(ann_root / Path(v).relative_to(tmp)) for k, v in sources.items()
                    }
                    (tmp / "SOURCES.json").write_text(json.dumps(sources))
                    if ann_root.exists():
                        shutil.rmtree(ann_root)
                    os.replace(tmp, ann_root)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    return json.loads(marker.read_text())
