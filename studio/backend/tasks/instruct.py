"""Instruction editing ("make it winter") with InstructPix2Pix, plus a multi-turn edit history.

The InstructPix2Pix UNet (8 input channels: the noisy latent + the input image's latent) is the
registry role "unet_instruct"; text encoder, tokenizer and VAE are the shared base components.
Two guidance scales (Brooks et al. 2023): text guidance (`guidance_scale`, how strongly to
follow the instruction) and image guidance (`image_guidance_scale`, how close to stay to the
input). The output size comes from the input image: aspect kept, sides multiples of 8, longest
side `min(max_side, input's longest side)` (images are never upscaled).

`EditHistory` is the pure-python model behind the tab's multi-turn editing: a *linear* history
(version 0 = the original). Selecting an earlier version only moves the cursor; the next edit
from version k drops versions k+1.. (A1111-style truncating branch), which the UI says first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from PIL import Image

from ..common import (
    CancelToken,
    ProgressFn,
    StudioError,
    TaskContext,
    configure_pipe,
    cpu_generator,
    effective_steps_guidance,
    run_guarded,
    step_callback,
    step_kwargs,
    text_options,
)
from ..images import load_image
from ..models.registry import ModelRegistry
from ..requests import (
    MAX_GUIDANCE,
    MAX_SIDE,
    MIN_SIDE,
    GenerationParams,
    RequestError,
    check_number,
    check_prompt,
    check_side,
)
from .instruct_tools import MarkPlan, route, run_mark

MAX_IMAGE_GUIDANCE = 10.0
MIN_IMAGE_GUIDANCE = 1.0
DEFAULT_MAX_SIDE = 512
UNET_ROLE = "unet_instruct"
INSTRUCT_CHANNELS = 8


def _round8(value: float) -> int:
    """Nearest multiple of 8 (halves round up)."""
    return int(math.floor(value / 8 + 0.5)) * 8


def output_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Output (width, height) for an input size: aspect kept, multiples of 8, no upscaling.

    The longest side becomes `min(max_side, longest input side)` rounded down to a multiple of
    8; the other side is scaled by the same factor and rounded to the nearest multiple of 8.
    Raises RequestError when a side would end up below 64 px.
    """
    long_in, short_in = max(width, height), min(width, height)
    long_out = min(int(max_side), long_in) // 8 * 8
    short_out = _round8(short_in * long_out / long_in)
    if short_out < MIN_SIDE:
        if long_in < MIN_SIDE or short_in < MIN_SIDE:
            raise RequestError(
                f"image is {width}x{height}; instruction editing needs at least {MIN_SIDE} px "
                "per side. Upscale it first."
            )
        # smallest long side whose short side rounds to MIN_SIDE
        need = math.ceil((MIN_SIDE - 4) * long_in / short_in / 8) * 8
        fix = (f"Raise max side to at least {need}, or crop" if need <= MAX_SIDE else "Crop")
        raise RequestError(
            f"at max side {max_side} this {width}x{height} image would be {long_out}x{short_out} "
            f"px (long x short side); each side must be at least {MIN_SIDE} px. "
            f"{fix} the image to a less elongated shape."
        )
    return (long_out, short_out) if width >= height else (short_out, long_out)


@dataclass
class InstructRequest(GenerationParams):
    """Edit `image` by the instruction in `prompt` (InstructPix2Pix).

    `guidance_scale` is the text guidance; `width`/`height` are derived from the image and
    `max_side` in `validate()` (any value passed in is replaced). After `validate()`, `image`
    holds the checked RGB PIL image; the runner records it next to the outputs.
    """

    image: Any = None
    image_guidance_scale: float = 1.5
    max_side: int = DEFAULT_MAX_SIDE
    steps: int = 20
    tools: bool = True  # "mark the cat in red" is answered by a text mask (instruct_tools)

    task: ClassVar[str] = "instruct"
    image_fields: ClassVar[tuple[str, ...]] = ("image",)

    def unet_passes(self) -> int:
        """InstructPix2Pix guides on text and image: three UNet evaluations per step (none
        when a tool answers the instruction)."""
        if self.tool_plan() is not None:
            return 0
        return 1 if self.fast or self.guidance_scale <= 1 else 3

    def tool_plan(self) -> MarkPlan | None:
        """The tool that answers this instruction (see instruct_tools), or None for the model.
        An unknown colour is a RequestError."""
        return route(self.prompt) if self.tools else None

    def validate(self) -> None:
        check_prompt("instruction", self.prompt, False)
        if not self.prompt.strip():
            raise RequestError(
                "instruction is empty: say what to change, e.g. 'make it winter' or "
                "'turn the cat into a fox'"
            )
        check_number("text guidance", self.guidance_scale, 0, MAX_GUIDANCE)
        check_number("image guidance", self.image_guidance_scale, -math.inf, math.inf)
        if not MIN_IMAGE_GUIDANCE <= self.image_guidance_scale <= MAX_IMAGE_GUIDANCE:
            why = (
                ": below 1 the InstructPix2Pix pipeline switches all guidance off (1 = no extra "
                "pull towards the input image, 1.2-2 is typical, higher stays closer to it)"
                if self.image_guidance_scale < MIN_IMAGE_GUIDANCE else ""
            )
            raise RequestError(
                f"image guidance must be between {MIN_IMAGE_GUIDANCE:g} and "
                f"{MAX_IMAGE_GUIDANCE:g}, got {self.image_guidance_scale:g}{why}"
            )
        check_side("max side", self.max_side)
        self.max_side = int(self.max_side)
        self.tools = bool(self.tools)
        self.tool_plan()  # an unknown colour is refused before anything loads
        self.image = load_image(self.image, "image")
        self.width, self.height = output_size(*self.image.size, self.max_side)
        super().validate()
        self.image_guidance_scale = float(self.image_guidance_scale)


def instruct_pipeline(registry: ModelRegistry) -> Any:
    """The family's InstructPix2Pix pipeline on the shared components + the 8-ch UNet."""
    pipe = registry.family.pipeline(registry, "instruct", UNET_ROLE)
    channels = pipe.unet.config.in_channels
    if channels != INSTRUCT_CHANNELS:
        raise StudioError(
            f"the instruction-editing UNet '{registry.model_set.source(UNET_ROLE)}' has "
            f"{channels} input channels; InstructPix2Pix needs {INSTRUCT_CHANNELS} (e.g. "
            f"{registry.family.model_set.source(UNET_ROLE)})."
        )
    return pipe


def run_instruct(
    registry: ModelRegistry,
    req: InstructRequest,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> tuple[Image.Image, dict[str, Any]]:
    """Edit one image; returns (PIL image, info). `req` must be validated with a seed."""
    # 1. pipeline from shared components, fresh scheduler, adapters (LCM in fast mode)
    pipe = instruct_pipeline(registry)
    configure_pipe(registry, pipe, req, UNET_ROLE)
    steps, guidance = effective_steps_guidance(req)
    # 2. input at the output size (the pipeline keeps the size of the image it is given)
    image = req.image
    if image.size != (req.width, req.height):
        image = image.resize((req.width, req.height), Image.Resampling.LANCZOS)

    # 3. sample
    def call() -> Any:
        return pipe(
            prompt=req.prompt,
            image=image,
            negative_prompt=req.negative_prompt or None,
            **text_options(pipe, req),
            num_inference_steps=steps,
            guidance_scale=guidance,
            image_guidance_scale=req.image_guidance_scale,
            generator=cpu_generator(req.seed),
            **step_kwargs(pipe, step_callback(steps, progress, cancel)),
        )

    out = run_guarded(registry, call, cancel)
    guided = guidance > 1.0  # the pipeline skips guidance entirely at text guidance <= 1
    return out.images[0], {
        "steps_run": steps,
        "guidance_run": guidance,
        "image_guidance_run": req.image_guidance_scale if guided else None,
        "input_size": list(req.image.size),
        "size": [req.width, req.height],
    }


def instruct_runner(ctx: TaskContext, req: InstructRequest, progress: ProgressFn | None,
                    cancel: CancelToken | None) -> tuple[Image.Image, dict[str, Any]]:
    """Studio task runner: edit (or answer with a tool, see instruct_tools), and record the
    input so the request can be rerun."""
    plan = req.tool_plan()
    if plan is not None:
        image, info = run_mark(ctx, req.image, plan)
    else:
        image, info = run_instruct(ctx.registry, req, progress, cancel)
    req.record_inputs(ctx.outputs.record_input)
    info["input_file"] = req.image
    return image, info


# ---------------------------------------------------------------------------- history
@dataclass
class Version:
    """One image in an edit history: its file and the instruction that produced it."""

    path: str
    instruction: str = ""  # "" for the original
    seed: int | None = None


@dataclass
class EditHistory:
    """Linear multi-turn edit history; version 0 is the original image.

    `current` is the version the next edit starts from. `select(k)`/`step_back()` only move
    it; `push()` (a new edit) first drops every version after `current` (truncating branch),
    then appends the result and makes it current.
    """

    versions: list[Version] = field(default_factory=list)
    current: int = -1

    @classmethod
    def start(cls, path: str) -> EditHistory:
        """A new history whose version 0 is the original image at `path`."""
        return cls([Version(str(path))], 0)

    def __len__(self) -> int:
        return len(self.versions)

    def _check(self, k: int) -> int:
        if not self.versions:
            raise ValueError("the edit history is empty: upload an image and edit it first")
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(self.versions):
            raise ValueError(
                f"version {k!r} does not exist; the history has versions 0 to "
                f"{len(self.versions) - 1}"
            )
        return k

    @property
    def current_version(self) -> Version:
        return self.versions[self._check(self.current)]

    @property
    def current_path(self) -> str:
        return self.current_version.path

    @property
    def parent_path(self) -> str | None:
        """The version the current one was edited from (None for the original)."""
        k = self._check(self.current)
        return self.versions[k - 1].path if k > 0 else None

    @property
    def would_drop(self) -> int:
        """How many later versions the next edit from `current` would drop."""
        return max(0, len(self.versions) - 1 - self.current) if self.versions else 0

    def select(self, k: int) -> Version:
        """Make version `k` current (nothing is dropped until the next edit)."""
        self.current = self._check(k)
        return self.versions[k]

    def step_back(self, n: int = 1) -> Version:
        """Move the cursor `n` versions back (not past the original)."""
        return self.select(max(0, self._check(self.current) - n))

    def branch(self, k: int) -> list[Version]:
        """Continue from version `k`: drop (and return) the versions after it."""
        self.select(k)
        dropped = self.versions[k + 1:]
        del self.versions[k + 1:]
        return dropped

    def push(self, path: str, instruction: str, seed: int | None = None) -> list[Version]:
        """Record an edit of the current version; returns the versions it dropped."""
        dropped = self.branch(self._check(self.current))
        self.versions.append(Version(str(path), instruction, seed))
        self.current = len(self.versions) - 1
        return dropped

    def labels(self) -> list[str]:
        """Short captions for a history strip: 'v0 original', 'v1: make it winter'."""
        return [
            f"v{i} original" if i == 0 else f"v{i}: {v.instruction}"
            for i, v in enumerate(self.versions)
        ]
