"""What a model family declares (see the package docstring); no family is named here."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..modelsets import ModelSet


class UnsupportedTask(ValueError):
    """A task this family has no method for; the message says why (and what to use)."""


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

    # ------------------------------------------------------------------ components
    def component(self, role: str) -> Component | None:
        """How `role` loads in this family (None: a family-independent role such as TAESD)."""
        for name in (role, role.split(":", 1)[0], role.split("_", 1)[0]):
            if name in self.components:
                return self.components[name]
        return None

    def single_file_parts(self, source: str, dtype: Any, local_only: bool,
                          extra: dict[str, Any]) -> dict[str, Any]:
        """Split one original-layout checkpoint into the shared components' objects."""
        pipe = load_class(self.single_file).from_single_file(
            source, dtype=dtype, local_files_only=local_only, **self.pipeline_kwargs, **extra)
        parts = {role: getattr(pipe, role) for role in ("unet", *self.shared.values())}
        parts["scheduler"] = dict(pipe.scheduler.config)
        return parts

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
