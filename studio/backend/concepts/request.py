"""What a concept-training request is: the concept's name (its prompt token), 3-20 pictures
prepared as training sees them, the method and its settings, checked in one place."""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from PIL import Image

from ..images import load_image
from ..requests import (
    MAX_SEED,
    RequestError,
    check_number,
    check_prompt,
    request_from_dict,
)
from .seedselect import (
    MAX_BOOTSTRAP,
    MAX_IMAGES,
    MIN_IMAGES,
    check_image_count,
    fit_image,
)

METHODS = ("textual_inversion", "lora", "seedselect")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
THUMB_SIDE = 128
MIN_IMAGE_SIDE = 64
MAX_TRAIN_STEPS = 5000
# Defaults when `steps` / `learning_rate` are 0.
DEFAULT_STEPS = {"textual_inversion": 500, "lora": 400, "seedselect": 20}
DEFAULT_LR = {"textual_inversion": 5e-3, "lora": 1e-4, "seedselect": 0.05}


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


def text_of(value: Any, depth: int = 0) -> list[str]:
    """Every string inside a request (prompt, negative prompt, box phrases, ...)."""
    if isinstance(value, str):
        return [value]
    if depth > 3:
        return []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in text_of(v, depth + 1)]
    if hasattr(value, "__dataclass_fields__"):
        return [s for f in fields(value) for s in text_of(getattr(value, f.name), depth + 1)]
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
