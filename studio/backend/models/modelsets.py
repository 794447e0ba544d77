"""Where each model comes from, per model set: Hub ids, or folders in the Hub layout.

A model set maps *repos* (what a Hub repository provides: "base", "inpaint", "controlnet:depth",
...) to sources (a Hub id or a local path). The registry asks for *roles* ("unet", "vae",
"unet_inpaint", "controlnet:depth"), and `ROLE_REPOS` says which repo each role comes from.
A set belongs to one model family (`models.families`), which says how each role loads; the
real sets (the Hub ids) live in the family modules. Adding a model to the studio is one repo
entry here (and in the built-in sets' folders), one role if the registry loads it, and its
loading in the family (`Family.components`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

CONTROL_TYPES = ("scribble", "openpose", "depth", "canny")
# Share of the steps SD1.5's GLIGEN grounds by default (scheduled sampling, Li et al. 2023).
GLIGEN_FRACTION = 0.3
# Caption templates a concept's token is trained in, for photo models such as SD1.5.
PHOTO_TEMPLATES = (
    "a photo of {}",
    "a rendering of {}",
    "a close-up photo of {}",
    "a good photo of {}",
    "a photo of the {}",
    "a cropped photo of {}",
    "a bright photo of {}",
    "a photo of a nice {}",
)

# Each repo a model set names, and its folder name in a local set in the Hub layout (the
# built-in toy and tiny sets).
REPOS: dict[str, str] = {
    "base": "stable-diffusion",
    "inpaint": "stable-diffusion-inpainting",
    "instruct": "instruct-pix2pix",
    "gligen": "gligen-generation-text-box",
    "gligen_inpaint": "gligen-inpainting-text-box",
    "lcm_lora": "lcm-lora",
    "image_encoder": "clip-vision",
    "taesd": "taesd",  # the tiny preview decoder (live previews)
    # a VAE fine-tuned to decode in fp16 without overflowing (SDXL's), used in fp16 only; its
    # files are at the repo's root
    "vae_fp16": "vae-fp16",
    # IP-Adapter (Remix): the adapter file and its image encoder, as h94/IP-Adapter lays out
    # (`models/ip-adapter_sd15.safetensors`, `models/image_encoder/`)
    "ip_adapter": "ip-adapter",
    "ip_text": "clip-text",  # the text tower of the IP-Adapter's image encoder (text diffs)
    **{f"controlnet:{t}": f"controlnet-{t}" for t in CONTROL_TYPES},
    # one ControlNet for every control type, told which by a mode (ControlNet Union)
    "controlnet_union": "controlnet-union",
}
# Registry roles -> the repo providing them (ControlNet roles are their own repo keys).
ROLE_REPOS: dict[str, str] = {
    "unet": "base", "vae": "base", "text_encoder": "base", "tokenizer": "base",
    "scheduler": "base", "text_encoder_2": "base", "tokenizer_2": "base",
    "unet_inpaint": "inpaint", "unet_instruct": "instruct",
    "unet_gligen": "gligen", "unet_gligen_inpaint": "gligen_inpaint",
    "lcm_lora": "lcm_lora", "image_encoder": "image_encoder", "taesd": "taesd",
    "ip_adapter": "ip_adapter", "ip_image_encoder": "ip_adapter", "ip_text_encoder": "ip_text",
    "controlnet_union": "controlnet_union",
}


@dataclass(frozen=True)
class ModelSet:
    """Sources (Hub repo ids or local paths) of every repo the studio uses, plus defaults."""

    name: str
    repos: Mapping[str, str]  # repo key (see REPOS) -> Hub id or local path
    family: str = "sd15"  # the model family (`models.families`) its models belong to
    annotators: dict[str, str] | None = None  # None = the annotators' own Hub defaults
    offline_models: bool = False  # True for built-in test/toy models: the UI shows a banner
    native_size: int = 512  # the image side the models were trained at (UI default)
    gligen_fraction: float = GLIGEN_FRACTION  # default share of GLIGEN-grounded steps
    # captions a concept's token is trained in (empty: photo captions, as for SD1.5)
    concept_templates: tuple[str, ...] = ()
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    upscalers_dir: str = ""  # upscaler models that come with the set (the toy world's)

    def get(self, repo: str) -> str:
        """The source of `repo`, or "" when this set has none (e.g. the toy set's LCM-LoRA)."""
        return self.repos.get(repo, "")

    def source(self, role: str) -> str:
        """Source for a registry role such as "unet", "unet_inpaint", "controlnet:depth"."""
        if role.startswith("controlnet:"):
            if role not in self.repos:
                raise ValueError(
                    f"unknown control type {role.split(':', 1)[1]!r}; known: "
                    f"{', '.join(sorted(self.controlnets))}"
                )
            return self.repos[role]
        if role not in ROLE_REPOS:
            raise ValueError(f"unknown model role {role!r}")
        return self.get(ROLE_REPOS[role])

    @property
    def base(self) -> str:
        return self.get("base")

    @property
    def controlnets(self) -> dict[str, str]:
        """Control type -> ControlNet source, for the types this set has."""
        return {k.split(":", 1)[1]: v for k, v in self.repos.items()
                if k.startswith("controlnet:") and v}

    @property
    def templates(self) -> tuple[str, ...]:
        """Caption templates for concept training ("a photo of {}" ... for photo models)."""
        return self.concept_templates or PHOTO_TEMPLATES

    def with_base(self, base: str) -> ModelSet:
        return replace(self, repos={**self.repos, "base": base})

    def with_repos(self, **repos: str) -> ModelSet:
        """A copy with some sources replaced (keys as in REPOS; ControlNets as controlnet_x)."""
        renamed = {k.replace("controlnet_", "controlnet:"): v for k, v in repos.items()}
        return replace(self, repos={**self.repos, **renamed})


def local_repos(root: Path, aliases: Mapping[str, str] | None = None) -> dict[str, str]:
    """The repos present under `root` (a folder of Hub-layout folders named as in REPOS).

    `aliases` maps a repo key to another key's folder (the toy set's one ControlNet serves
    both scribble and canny).
    """
    root = Path(root)
    out = {key: str(root / folder) for key, folder in REPOS.items() if (root / folder).exists()}
    for key, other in (aliases or {}).items():
        out[key] = str(root / REPOS[other])
    return out

