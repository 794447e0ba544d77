"""What a model family declares (see the package docstring); no family is named here."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..modelsets import ModelSet

log = logging.getLogger(__name__)


class UnsupportedTask(ValueError):
    """A task this family has no method for; the message says why (and what to use)."""


def _digest(family: Family) -> str:
    """What a written config folder was written from (rewritten when it changes)."""
    text = json.dumps([family.configs, family.tokenizers], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_class(path: str) -> Any:
    """`"diffusers.UNet2DConditionModel"` -> the class (imported now, on first use)."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Component:
    """How one registry role loads: `cls.from_pretrained(source, subfolder=...)`.

    `kind` is "model" (weights, loaded in the registry's dtype), "tokenizer" (no dtype) or
    "config" (only the config dict is read: the scheduler, from which each call builds its
    own sampler).
    """

    cls: str
    subfolder: str | None = None
    kind: str = "model"

    def load(self, source: str, dtype: Any, hub_kwargs: dict[str, Any]) -> Any:
        cls = load_class(self.cls)
        kw = dict(hub_kwargs)
        if self.subfolder:
            kw["subfolder"] = self.subfolder
        if self.kind == "config":
            return cls.load_config(source, **kw)
        if self.kind == "model":
            kw["dtype"] = dtype
        return cls.from_pretrained(source, **kw)


@dataclass(frozen=True)
class Method:
    """How a family does a task: `how` is the README's cell (the method, its models)."""

    how: str


@dataclass(frozen=True)
class Unsupported:
    """A task a family cannot do, and why (shown to the user before anything loads)."""

    why: str


@dataclass(frozen=True)
class Defaults:
    """What a family's models were trained for (the native size is the model set's)."""

    steps: int = 25
    guidance: float = 7.5
    sampler: str = "Euler a"
    # the Align Your Steps timesteps tuned for this family's denoiser (a key of diffusers'
    # `AysSchedules`); None: the "ays" schedule is refused by name
    ays: str | None = None


@dataclass(frozen=True)
class Family:
    """Everything that differs between model families; see the module docstring."""

    name: str
    label: str
    # registry role -> how it loads; a role ending in a name here ("unet_inpaint" -> "unet",
    # "controlnet:depth" -> "controlnet") loads as that one
    components: Mapping[str, Component]
    # the components every pipeline of the family takes besides its denoiser (pipeline
    # argument -> registry role): built once, shared by every tab
    shared: Mapping[str, str]
    # kind of job -> diffusers pipeline class ("txt2img", "control", "inpaint", ...)
    pipelines: Mapping[str, str]
    # task of the task table -> its method here, or why there is none
    tasks: Mapping[str, Method | Unsupported]
    model_set: ModelSet  # the real models (Hub ids), `--models <name>`
    defaults: Defaults = field(default_factory=Defaults)
    # constructor arguments every pipeline gets (SD1.5: no safety checker)
    pipeline_kwargs: Mapping[str, Any] = field(default_factory=dict)
    single_file: str = ""  # pipeline class whose from_single_file reads an original checkpoint
    # a textual-inversion embedding's parts: (key in the file, tokenizer, text encoder), as
    # model sites share them (SDXL: "clip_l" and "clip_g"; SD1.5: one tensor)
    embedding_parts: tuple[tuple[str, str, str], ...] = (
        ("clip_l", "tokenizer", "text_encoder"),)
    denoiser: str = "unet"  # the pipeline argument that takes the denoiser
    # the IP-Adapter file's path in the adapter repo (Remix, reference pictures); "": none
    ip_adapter_weight: str = ""
    # the denoiser also takes the pooled prompt and the size/crop numbers (SDXL's text_time)
    text_time: bool = False
    # ControlNet Union (one model, every type): control type -> its mode index ({}: none)
    union_modes: Mapping[str, int] = field(default_factory=dict)
    # the base repo's small files, shipped so a single-file checkpoint loads with no Hub and
    # no cache (`write_configs`): a path in the repo -> its JSON; and each CLIP tokenizer
    # folder -> its pad token (the tokenizer files are built from CLIP's BPE merges)
    configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tokenizers: Mapping[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ components
    def component(self, role: str) -> Component | None:
        """How `role` loads in this family (None: a family-independent role such as TAESD)."""
        for name in (role, role.split(":", 1)[0], role.split("_", 1)[0]):
            if name in self.components:
                return self.components[name]
        return None

    def write_configs(self, folder: Path) -> Path | None:
        """The family's base repo without weights (model index, component configs,
        tokenizers) in `folder`, written once, for `from_single_file(config=folder)`; None
        when the family ships none or CLIP's merges are not installed (then the Hub's base
        repo, or its cached copy, is the config)."""
        if not self.configs:
            return None
        folder = Path(folder) / self.name
        marker = folder / "COMPLETE"
        if marker.is_file() and marker.read_text() == _digest(self):
            return folder
        from ..tokenizer_vocab import write_clip_tokenizer

        try:
            for sub, pad in self.tokenizers.items():
                write_clip_tokenizer(folder / sub, pad)
        except FileNotFoundError as e:
            log.warning("no shipped configs for %s single files: %s", self.label, e)
            return None
        for rel, data in self.configs.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(json.dumps(data, indent=1))
        marker.write_text(_digest(self))
        return folder

    def single_file_parts(self, source: str, dtype: Any, local_only: bool,
                          extra: dict[str, Any]) -> dict[str, Any]:
        """Split one original-layout checkpoint into the shared components' objects."""
        pipe = load_class(self.single_file).from_single_file(
            source, dtype=dtype, local_files_only=local_only, **self.pipeline_kwargs, **extra)
        parts = {role: getattr(pipe, role) for role in ("unet", *self.shared.values())}
        parts["scheduler"] = dict(pipe.scheduler.config)
        return parts

    def denoiser_conditioning(self, pipe: Any, prompt: str, negative_prompt: str,
                              guidance: bool, width: int, height: int
                              ) -> tuple[Any, dict[str, Any]]:
        """(encoder hidden states, added conditioning) a denoiser call of `pipe`'s takes for
        `prompt`, unconditional first when `guidance`, as the family's pipeline makes them:
        for methods that call the denoiser themselves (SeedSelect). Under no_grad."""
        import torch

        with torch.no_grad():
            encoded = pipe.encode_prompt(
                prompt=prompt, device=pipe.unet.device, num_images_per_prompt=1,
                do_classifier_free_guidance=guidance, negative_prompt=negative_prompt or None)
        if not self.text_time:
            cond, uncond = encoded[:2]
            return (torch.cat([uncond, cond]) if guidance else cond), {}
        cond, uncond, pooled, upooled = encoded
        size = (height, width)
        time_ids = pipe._get_add_time_ids(
            size, (0, 0), size, dtype=cond.dtype,
            text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim,
        ).to(pipe.unet.device)
        if not guidance:
            return cond, {"text_embeds": pooled, "time_ids": time_ids}
        return torch.cat([uncond, cond]), {"text_embeds": torch.cat([upooled, pooled]),
                                           "time_ids": torch.cat([time_ids, time_ids])}

    # ------------------------------------------------------------------ tasks
    def refusal(self, task: str) -> str | None:
        """Why this family cannot do `task` (what the user reads), or None when it can."""
        method = self.tasks.get(task)
        if isinstance(method, Unsupported):
            return f"{task} is not available for {self.label} models: {method.why}"
        return None

    def pipeline(self, registry: Any, kind: str, denoiser: str = "unet",
                 controlnets: tuple[str, ...] = ()) -> Any:
        """The family's pipeline for `kind`, assembled from the registry's shared components
        with `denoiser` (a registry role) and, for control, the ControlNet roles (one is
        passed as is; diffusers wraps a list in a multi-ControlNet). Built once per set of
        components; a fresh sampler is set per call (`configure_pipe`)."""
        if kind not in self.pipelines:
            raise UnsupportedTask(f"{self.label} models have no {kind} pipeline")
        cls_path = self.pipelines[kind]
        roles: dict[str, Any] = {**self.shared, self.denoiser: denoiser}
        if controlnets:
            roles["controlnet"] = controlnets if len(controlnets) > 1 else controlnets[0]

        def factory(components: dict[str, Any]) -> Any:
            return load_class(cls_path)(
                **components, scheduler=registry.new_scheduler(self.defaults.sampler),
                **self.pipeline_kwargs)

        return registry.pipeline(kind, factory, roles)


def clip_text_config(width: int, layers: int, heads: int, act: str,
                     with_projection: bool = False) -> dict[str, Any]:
    """A CLIP text encoder's `config.json` as SD's repos hold it (CLIP's 49408 tokens, 77
    positions; bos/eos/pad ids 0/2/1 as those configs say, so the pooled output is read at
    the highest token id, the end token, as the models were trained)."""
    return {
        "architectures": ["CLIPTextModelWithProjection" if with_projection else "CLIPTextModel"],
        "model_type": "clip_text_model", "attention_dropout": 0.0, "dropout": 0.0,
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "hidden_act": act,
        "hidden_size": width, "intermediate_size": 4 * width, "initializer_factor": 1.0,
        "initializer_range": 0.02, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
        "num_attention_heads": heads, "num_hidden_layers": layers, "projection_dim": width,
        "vocab_size": 49408,
    }


def sd_vae_config(scaling_factor: float, sample_size: int, **extra: Any) -> dict[str, Any]:
    """SD's VAE (`AutoencoderKL`, 4 latent channels, 8x downsampling) as its repos hold it."""
    return {
        "_class_name": "AutoencoderKL", "act_fn": "silu", "in_channels": 3, "out_channels": 3,
        "block_out_channels": [128, 256, 512, 512], "latent_channels": 4,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 2,
        "norm_num_groups": 32, "sample_size": sample_size, "scaling_factor": scaling_factor,
        **extra,
    }
