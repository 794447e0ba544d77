"""Request dataclasses, one per task, validated in one place with messages a person understands.

`validate()` raises `RequestError` (a ValueError); the UI shows it as an error toast and the API
returns the same text. Requests are JSON-able (`to_dict`) so every output image can carry the
exact request that made it, and `from_dict` rebuilds it to regenerate the image.

Input images: `validate()` decodes them (paths through the file gate); the runner calls
`record_inputs` once they are final, which stores each as a file next to the outputs and
keeps its name relative to the outputs folder, so `to_dict()` is the request as run.
`map_inputs` is the one place a request lists its input images (nested ones included).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from .models.schedulers import (
    DEFAULT_SCHEDULE,
    DEFAULT_SCHEDULER,
    SCHEDULES,
    USER_SCHEDULERS,
    schedule_refusal,
)

MIN_SIDE, MAX_SIDE = 64, 2048
MAX_STEPS = 150
MAX_GUIDANCE = 30.0
MAX_PROMPT_CHARS = 4000
MAX_SEED = 2**32 - 1
MAX_CLIP_SKIP = 12  # SD's CLIP text encoder has 12 layers (A1111's slider goes to 12)
FAST_STEPS = 4  # fast mode (LCM-LoRA) samples in at most this many steps


# fn(value, stem) -> new value: applied to every input image of a request (see map_inputs)
InputFn = Callable[[Any, str], Any]


class RequestError(ValueError):
    """An invalid request; the message is shown to the user as is."""


def check_number(name: str, value: Any, lo: float, hi: float, integer: bool = False) -> None:
    """Reject NaN/inf, non-numbers and values outside [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise RequestError(f"{name} must be a finite number, got {value}")
    if integer and float(value) != int(value):
        raise RequestError(f"{name} must be a whole number, got {value}")
    if not lo <= value <= hi:
        raise RequestError(f"{name} must be between {lo:g} and {hi:g}, got {value:g}")


def check_side(name: str, value: Any) -> None:
    check_number(name, value, MIN_SIDE, MAX_SIDE, integer=True)
    if int(value) % 8:
        lower, upper = int(value) // 8 * 8, int(value) // 8 * 8 + 8
        raise RequestError(
            f"{name} must be a multiple of 8 (the VAE works on 8x8 pixel blocks), got {value}; "
            f"try {lower} or {upper}"
        )


def check_prompt(name: str, value: Any, required: bool) -> None:
    if not isinstance(value, str):
        raise RequestError(f"{name} must be text, got {type(value).__name__}")
    if required and not value.strip():
        raise RequestError(f"{name} is empty: describe what you want to see")
    if len(value) > MAX_PROMPT_CHARS:
        raise RequestError(
            f"{name} is {len(value)} characters long; the limit is {MAX_PROMPT_CHARS} "
            "(the text encoder only reads the first 77 tokens anyway)"
        )


def loads_json(text: str, name: str) -> Any:
    """`json.loads` for a client's JSON text: nesting too deep for the parser (thousands of
    brackets in a small request) is refused by name instead of failing as an internal error.
    Malformed JSON still raises `json.JSONDecodeError`, which callers word for their value."""
    try:
        return json.loads(text)
    except RecursionError:
        raise RequestError(f"{name} is nested too deeply to read; the studio's JSON values are "
                           "a few levels deep at most") from None


def request_from_dict(cls: type, data: dict[str, Any], task: str) -> Any:
    """Build request dataclass `cls` from a dict, naming any unknown keys (a "task" key is
    accepted: saved requests carry it)."""
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names - {"task"}
    if unknown:
        raise RequestError(f"unknown {task} parameters: {', '.join(sorted(unknown))}")
    return cls(**{k: v for k, v in data.items() if k in names})


def jsonable(value: Any) -> Any:
    """A request value as JSON: lists and dicts recursively; anything not JSON-able (a decoded
    image) becomes None."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return None


@dataclass
class GenerationParams:
    """Parameters every generating task shares (the common API parameters)."""

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    steps: int = 25
    guidance_scale: float = 7.5
    width: int = 512
    height: int = 512
    scheduler: str = DEFAULT_SCHEDULER
    fast: bool = False
    schedule: str = DEFAULT_SCHEDULE  # the sampler's noise schedule (models.schedulers)
    clip_skip: int = 1  # as A1111: 1 = the text encoder's last layer, 2 = the one before
    model: str = ""  # the checkpoint (a name GET /models lists; "" = the server's default)

    task: ClassVar[str] = "generate"
    prompt_required: ClassVar[bool] = True
    image_fields: ClassVar[tuple[str, ...]] = ()  # fields holding input images (or lists)

    def validate(self) -> None:
        check_prompt("prompt", self.prompt, self.prompt_required)
        check_prompt("negative prompt", self.negative_prompt, False)
        check_number("seed", self.seed, -1, MAX_SEED, integer=True)
        check_number("steps", self.steps, 1, MAX_STEPS, integer=True)
        check_number("guidance scale", self.guidance_scale, 0, MAX_GUIDANCE)
        check_side("width", self.width)
        check_side("height", self.height)
        if not isinstance(self.scheduler, str) or self.scheduler not in USER_SCHEDULERS:
            raise RequestError(
                f"unknown scheduler {self.scheduler!r}; choose one of: {', '.join(USER_SCHEDULERS)}"
            )
        if not isinstance(self.fast, bool):
            raise RequestError(f"fast must be true or false, got {self.fast!r}")
        if not isinstance(self.schedule, str) or self.schedule not in SCHEDULES:
            raise RequestError(f"unknown schedule {self.schedule!r}; choose one of: "
                               f"{', '.join(SCHEDULES)}")
        if self.fast and self.schedule != DEFAULT_SCHEDULE:
            raise RequestError(f"schedule {self.schedule!r}: fast mode samples with LCM on "
                               "its own schedule; use schedule default, or untick Fast mode")
        why = None if self.fast else schedule_refusal(self.scheduler, self.schedule)
        if why:
            raise RequestError(why)
        check_number("clip skip", self.clip_skip, 1, MAX_CLIP_SKIP, integer=True)
        self.clip_skip = int(self.clip_skip)
        self.seed, self.steps = int(self.seed), int(self.steps)
        self.width, self.height = int(self.width), int(self.height)
        self.guidance_scale = float(self.guidance_scale)

    def resolve_seed(self) -> int:
        """Replace seed -1 by a concrete random seed (reported back to the user)."""
        if self.seed == -1:
            self.seed = random.randint(0, MAX_SEED)
        return self.seed

    @property
    def sampler_name(self) -> str:
        return "LCM" if self.fast else self.scheduler

    def unet_passes(self) -> int:
        """UNet evaluations per step: 2 with classifier-free guidance, 1 without."""
        return 1 if self.fast or self.guidance_scale <= 1 else 2

    def megapixels(self) -> float:
        """The size each denoiser pass of this job works at (after `validate()`)."""
        return self.width * self.height / 1e6

    def work(self) -> float:
        """What the job costs, for the server's per-job budget: megapixel-steps times the
        UNet evaluations per step (call after `validate()`, which settles the size). A
        feature that adds passes adds them here; `cost.Rate` turns it into seconds."""
        steps = min(self.steps, FAST_STEPS) if self.fast else self.steps
        return steps * self.width * self.height / 1e6 * self.unet_passes()

    def check_upscalers(self, library: Any) -> None:
        """Resolve the upscaler names the request uses against the studio's `library`
        (`upscalers.UpscalerLibrary`); the plain request uses none."""

    def map_inputs(self, fn: InputFn) -> None:
        """Replace every input image by `fn(value, stem)` (stem names it, e.g. "mask").

        Requests with nested inputs (control units) override this; everything that stores or
        resolves inputs goes through it.
        """
        for name in self.image_fields:
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                setattr(self, name, [fn(v, f"{name}{i}") for i, v in enumerate(value, 1)])
            elif value is not None:
                setattr(self, name, fn(value, name))

    def record_inputs(self, record: InputFn) -> None:
        """Store the inputs as used (`record(image, stem)` returns the stored name); runners
        call this once their inputs are final, so the saved request re-runs exactly."""
        self.map_inputs(lambda value, stem: record(value, f"{self.task}-{stem}"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; input images appear as their stored names (None if never recorded)."""
        d = {f.name: jsonable(getattr(self, f.name)) for f in fields(self)}
        d["task"] = self.task
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationParams:
        return request_from_dict(cls, data, cls.task)


EXCITE_PASSES = 3  # an Attend-and-Excite update: a conditional forward and its backward
EXCITE_REFINE = 40  # at most 20 extra updates at each of its two refinement steps


@dataclass
class ExciteParams:
    """Attend-and-Excite, for the tasks that offer it (mixed in before GenerationParams):
    `excite_words` lists the subjects, separated by commas; empty picks them from the
    prompt."""

    attend_excite: bool = False
    excite_words: str = ""

    def validate(self) -> None:
        super().validate()  # type: ignore[misc]
        if not isinstance(self.attend_excite, bool):
            raise RequestError(f"attend_excite must be true or false, got {self.attend_excite!r}")
        check_prompt("excite_words", self.excite_words, False)

    def work(self) -> float:
        """Plus the worst case of the latent updates: half the steps and the refinements
        (none in fast mode, where Attend-and-Excite is off)."""
        base = super().work()  # type: ignore[misc]
        if not self.attend_excite or self.fast:  # type: ignore[attr-defined]
            return base
        megapixels = self.width * self.height / 1e6  # type: ignore[attr-defined]
        return base + (self.steps // 2 + EXCITE_REFINE) * EXCITE_PASSES * megapixels  # type: ignore[attr-defined]


# Hires fix (tasks/hires.py): the built-in upscalers' names (models add theirs, see
# upscalers.py), the scale range (1 = off) and the second pass's default denoise
LATENT, LANCZOS, NO_UPSCALER = "latent", "lanczos", "none"
BUILTIN_UPSCALERS = (LATENT, LANCZOS, NO_UPSCALER)
MIN_HIRES_SCALE, MAX_HIRES_SCALE = 1.0, 4.0
DEFAULT_DENOISE = 0.5
UPSCALER_WORK = 1.0  # an upscaler model's pass, in denoiser passes per output megapixel


def is_upscaler_model(name: str) -> bool:
    """True for an upscaler model's name (not latent, lanczos or none)."""
    return name.lower() not in BUILTIN_UPSCALERS


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The second pass's size: the first's times `scale`, each side a multiple of 8."""
    return (max(8, round(width * scale / 8) * 8), max(8, round(height * scale / 8) * 8))


@dataclass
class HiresParams:
    """Hires fix, for the tasks that offer it (mixed in before GenerationParams)."""

    hires_scale: float = 1.0
    hires_upscaler: str = LATENT
    hires_denoise: float = DEFAULT_DENOISE
    hires_steps: int = 0
    hires_prompt: str = ""

    @property
    def hires(self) -> bool:
        """True when the request asks for a second pass (`hires_scale` above 1)."""
        return self.hires_scale > 1

    @property
    def latent_upscale(self) -> bool:
        """True when the first pass must hand over its latents undecoded (`latent`)."""
        return self.hires and self.hires_upscaler == LATENT

    def hires_target(self) -> tuple[int, int]:
        """(width, height) of the final image (the request's size when hires fix is off)."""
        w, h = self.width, self.height  # type: ignore[attr-defined]
        return hires_size(w, h, self.hires_scale) if self.hires else (w, h)

    def validate(self) -> None:
        super().validate()  # type: ignore[misc]
        check_number("hires_scale", self.hires_scale, MIN_HIRES_SCALE, MAX_HIRES_SCALE)
        self.hires_scale = float(self.hires_scale)
        check_number("hires_denoise", self.hires_denoise, 0, 1)
        check_number("hires_steps", self.hires_steps, 0, MAX_STEPS, integer=True)
        self.hires_denoise, self.hires_steps = float(self.hires_denoise), int(self.hires_steps)
        check_prompt("hires_prompt", self.hires_prompt, False)
        if not isinstance(self.hires_upscaler, str) or not self.hires_upscaler.strip():
            raise RequestError("hires_upscaler must be an upscaler's name (latent, lanczos, "
                               "none or a model the studio lists)")
        if not self.hires:
            return
        w, h = self.width, self.height  # type: ignore[attr-defined]
        tw, th = self.hires_target()
        if max(tw, th) > MAX_SIDE:
            most = math.floor(MAX_SIDE / max(w, h) * 100) / 100
            raise RequestError(
                f"hires fix would make {w}x{h} x {self.hires_scale:g} = {tw}x{th}, over the "
                f"{MAX_SIDE} px per side the studio generates; use hires_scale at most "
                f"{most:g} or a smaller first size")
        if self.second_steps_run() < 1:
            raise RequestError(
                f"hires_denoise {self.hires_denoise:g} with {self.second_steps()} steps runs no "
                "second-pass step (steps x denoise < 1); raise hires_denoise or hires_steps")

    def second_steps(self) -> int:
        """The second pass's sampler steps before the denoise share (fast mode: at most 4)."""
        steps = self.hires_steps or self.steps  # type: ignore[attr-defined]
        return min(steps, FAST_STEPS) if self.fast else steps  # type: ignore[attr-defined]

    def second_steps_run(self) -> int:
        """The second pass's steps actually run: its steps x the denoise share."""
        return int(self.second_steps() * self.hires_denoise)

    def check_upscalers(self, library: Any) -> None:
        """The hires upscaler's name as the studio's library knows it (refused by name)."""
        if self.hires:
            self.hires_upscaler = library.check(self.hires_upscaler, "hires_upscaler")

    def megapixels(self) -> float:
        """The largest size a denoiser pass of this job works at (the second pass's)."""
        tw, th = self.hires_target()
        return tw * th / 1e6

    def work(self) -> float:
        """Plus the second pass: its steps x denoise at the final size (and an upscaler
        model's pass over it)."""
        return super().work() + self.hires_work()  # type: ignore[misc]

    def hires_work(self) -> float:
        """The second pass's work alone (0 when hires fix is off)."""
        if not self.hires:
            return 0.0
        tw, th = self.hires_target()
        mp = tw * th / 1e6
        second = self.second_steps_run() * mp * self.unet_passes()  # type: ignore[attr-defined]
        model = UPSCALER_WORK * mp if is_upscaler_model(self.hires_upscaler) else 0.0
        return second * self.second_pass_factor() + model

    def second_pass_factor(self) -> float:
        """What a second-pass step costs against a plain UNet step (ControlNets add)."""
        return 1.0

    def hires_info(self, first: tuple[int, int]) -> dict[str, Any]:
        """What info records of the second pass: its parameters and both sizes."""
        return {"hires": {"scale": self.hires_scale, "upscaler": self.hires_upscaler,
                          "denoise": self.hires_denoise, "steps": self.hires_steps,
                          "prompt": self.hires_prompt, "first_size": list(first),
                          "size": list(self.hires_target())}}



@dataclass
class Txt2ImgRequest(HiresParams, ExciteParams, GenerationParams):
    """Text to image (optionally with Attend-and-Excite and hires fix)."""

    task: ClassVar[str] = "txt2img"

