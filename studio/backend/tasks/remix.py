"""Remix: DALL·E 2's image-space operations (variations, interpolation, text diffs) with
IP-Adapter on the shared base UNet.

One to four pictures are embedded by the IP-Adapter's CLIP image encoder and blended by
their weights (`remix_space.interpolate`); with `text_from` and `text_to`, the blend is
moved along the direction between the two captions' embeddings from the same CLIP model's
text tower (`remix_space.text_diff`). The result is fed to IP-Adapter as the image prompt
(`ip_adapter_image_embeds`) at `image_scale`, next to the optional text prompt. The adapter
is installed on the shared UNet for this call only (`models.ip_adapter.ip_adapted`), so
every other tab's output stays bit-identical.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..common import (
    CancelToken,
    ProgressFn,
    StudioError,
    TaskContext,
    base_pipeline,
    configure_pipe,
    cpu_generator,
    effective_steps_guidance,
    run_guarded,
    step_callback,
    text_options,
)
from ..images import load_image
from ..models.ip_adapter import guided_embeds, ip_adapted
from ..models.registry import ModelRegistry
from ..requests import (
    GenerationParams,
    RequestError,
    check_number,
    check_prompt,
    loads_json,
)
from .remix_space import interpolate, text_diff

MAX_REMIX_IMAGES = 4
MAX_IMAGE_SCALE = 1.5
MAX_REFERENCES = 4  # reference pictures of the Control tab (style/content reference)


def listed(images: Any) -> list[Any]:
    """Image values as a list: none (None or "") is empty, one value a list of one."""
    if images is None or images == "":
        return []
    return list(images) if isinstance(images, (list, tuple)) else [images]


def parse_weights(value: Any, count: int) -> list[float]:
    """`weights` as a list of `count` non-negative numbers, not all zero (empty: equal)."""
    if value is None or (isinstance(value, str) and not value.strip()) or value == []:
        return [1.0] * count
    if isinstance(value, str):
        try:
            value = loads_json(value, "weights")
        except json.JSONDecodeError as err:
            raise RequestError(
                f"weights must be a JSON list of numbers such as [0.7, 0.3], got {value!r} "
                f"({err.msg})") from err
    if not isinstance(value, (list, tuple)):
        raise RequestError(f"weights must be a list of numbers, one per image, got {value!r}")
    if len(value) != count:
        raise RequestError(
            f"weights has {len(value)} number{'s' if len(value) != 1 else ''} but "
            f"{count} image{'s were' if count != 1 else ' was'} given: give one weight per "
            "image, in the same order (or leave weights empty for equal weights)")
    out = []
    for i, w in enumerate(value, 1):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise RequestError(f"weight {i} must be a finite number, got {w!r}")
        if w < 0:
            raise RequestError(f"weight {i} is {w:g}; weights must be 0 or more")
        out.append(float(w))
    if not any(out):
        raise RequestError("all weights are 0: give at least one image a weight above 0")
    return out


@dataclass
class RemixRequest(GenerationParams):
    """Variations (one image), interpolation (2-4 images with weights) and text diffs
    (`text_from` -> `text_to` by `text_amount`) of CLIP image embeddings, drawn by
    IP-Adapter at `image_scale`; `prompt` may be empty."""

    images: list[Any] = field(default_factory=list)
    weights: Any = ""
    text_from: str = ""
    text_to: str = ""
    text_amount: float = 0.5
    image_scale: float = 1.0

    task: ClassVar[str] = "remix"
    prompt_required: ClassVar[bool] = False
    image_fields: ClassVar[tuple[str, ...]] = ("images",)

    def validate(self) -> None:
        super().validate()
        images = listed(self.images)
        if not 1 <= len(images) <= MAX_REMIX_IMAGES:
            raise RequestError(
                f"{len(images)} images given; Remix takes 1 to {MAX_REMIX_IMAGES} pictures "
                "(1 for variations, 2-4 to blend)")
        self.images = [load_image(v, f"image {i}") for i, v in enumerate(images, 1)]
        self.weights = parse_weights(self.weights, len(self.images))
        check_prompt("text_from", self.text_from, False)
        check_prompt("text_to", self.text_to, False)
        self.text_from, self.text_to = self.text_from.strip(), self.text_to.strip()
        if bool(self.text_from) != bool(self.text_to):
            given, missing = (("text_from", "text_to") if self.text_from
                              else ("text_to", "text_from"))
            raise RequestError(
                f"only {given} is given: a text diff moves the image from one caption to "
                f"another, so write {missing} too (or clear both)")
        check_number("text_amount", self.text_amount, 0, 1)
        check_number("image_scale", self.image_scale, 0, MAX_IMAGE_SCALE)
        self.text_amount, self.image_scale = float(self.text_amount), float(self.image_scale)

    @property
    def text_diff(self) -> bool:
        return bool(self.text_from and self.text_to and self.text_amount > 0)


@torch.no_grad()
def embed_images(registry: ModelRegistry, images: list[Any]) -> torch.Tensor:
    """(N, D) CLIP image embeddings of `images` by the IP-Adapter's image encoder, one
    picture at a time: in a batch the same picture embeds a few ulps differently, and a
    blend with all its weight on one picture must be exactly that picture's variation."""
    encoder = registry.component("ip_image_encoder")
    registry.prepare(["ip_image_encoder"])
    out = []
    for image in images:
        pixels = encoder.image_processor(images=[image], return_tensors="pt").pixel_values
        pixels = pixels.to(device=encoder.device, dtype=encoder.dtype)
        out.append(encoder(pixel_values=pixels).image_embeds.float().cpu()[0])
    return torch.stack(out)


@torch.no_grad()
def embed_texts(registry: ModelRegistry, texts: list[str]) -> torch.Tensor:
    """(N, D) embeddings of `texts` by the text tower of the same CLIP model."""
    encoder = registry.component("ip_text_encoder")
    registry.prepare(["ip_text_encoder"])
    tok = encoder.tokenizer
    ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids.to(encoder.device)
    return encoder(input_ids=ids).text_embeds.float().cpu()


def remix_embedding(registry: ModelRegistry, req: RemixRequest) -> tuple[torch.Tensor,
                                                                          dict[str, Any]]:
    """The image prompt of a request: the weighted blend, moved by the text diff."""
    embeds = embed_images(registry, req.images)
    embed = interpolate(embeds, torch.tensor(req.weights))
    info: dict[str, Any] = {"weights": [w / sum(req.weights) for w in req.weights]}
    if req.text_diff:
        if not registry.model_set.get("ip_text"):
            raise StudioError(f"text diffs need the CLIP text tower of the IP-Adapter's "
                              f"image encoder, and the {registry.model_set.name} models have "
                              "none: clear text_from and text_to")
        text = embed_texts(registry, [req.text_from, req.text_to])
        if text.shape[-1] != embed.shape[-1]:
            raise StudioError(
                f"the text tower embeds in {text.shape[-1]} dimensions but the image encoder "
                f"in {embed.shape[-1]}: they must be the two halves of one CLIP model")
        moved = text_diff(embed, text[0], text[1], req.text_amount)
        info["text_diff_cosine"] = round(float(torch.cosine_similarity(moved, embed, 0)), 4)
        embed = moved
    return embed, info


def check_references(images: Any, scale: Any) -> list[Any]:
    """The Control tab's reference pictures, decoded (0-4), and a valid scale."""
    images = listed(images)
    if len(images) > MAX_REFERENCES:
        raise RequestError(f"{len(images)} reference images given; at most {MAX_REFERENCES}")
    check_number("reference_scale", scale, 0, MAX_IMAGE_SCALE)
    return [load_image(v, f"reference image {i}") for i, v in enumerate(images, 1)]


def require_adapter(registry: ModelRegistry, who_needs: str) -> None:
    """Refuse before any model work when the model set has no IP-Adapter (`who_needs`:
    e.g. "Remix needs")."""
    if not registry.model_set.get("ip_adapter"):
        raise StudioError(f"{who_needs} an IP-Adapter and the {registry.model_set.name} "
                          "models have none")


def checked_adapter(registry: ModelRegistry, embed_dim: int) -> Any:
    """The model set's IP-Adapter, checked against its image encoder's embedding size."""
    adapter = registry.component("ip_adapter")
    if adapter.embed_dim != embed_dim:
        raise StudioError(
            f"the IP-Adapter takes {adapter.embed_dim}-dimensional image embeddings but its "
            f"image encoder gives {embed_dim}: use the encoder the adapter was trained with")
    return adapter


@contextlib.contextmanager
def image_prompted(unet: Any, adapter: Any, embed: torch.Tensor, scale: float,
                   guidance: float) -> Iterator[dict[str, Any]]:
    """`embed` as the image prompt of a pipeline call on `unet`: yields the pipeline kwargs,
    with IP-Adapter installed at `scale` for the block only."""
    with ip_adapted(unet, adapter, scale):
        yield {"ip_adapter_image_embeds": guided_embeds(embed, guidance > 1, unet.device,
                                                        unet.dtype)}


@contextlib.contextmanager
def referenced(registry: ModelRegistry, unet: Any, images: list[Any], scale: float,
               guidance: float) -> Iterator[dict[str, Any]]:
    """Reference pictures as an image prompt for another pipeline call on `unet` (the
    Control tab's "style/content reference + ControlNet"): yields the pipeline kwargs
    (none without pictures), with IP-Adapter installed for the block only."""
    if not images:
        yield {}
        return
    require_adapter(registry, "Reference pictures need")
    embed = interpolate(embed_images(registry, images), torch.ones(len(images)))
    adapter = checked_adapter(registry, embed.shape[-1])
    with image_prompted(unet, adapter, embed, scale, guidance) as kwargs:
        yield kwargs


def run_remix(ctx: TaskContext, req: RemixRequest, progress: ProgressFn | None = None,
              cancel: CancelToken | None = None) -> tuple[Any, dict[str, Any]]:
    """Render the remixed image prompt; returns (PIL image, info)."""
    registry = ctx.registry
    require_adapter(registry, "Remix needs")
    # 1. the image prompt
    embed, info = remix_embedding(registry, req)
    adapter = checked_adapter(registry, embed.shape[-1])
    # 2. the pipeline, its scheduler and adapters; the inputs as used
    pipe = base_pipeline(registry)
    configure_pipe(registry, pipe, req, "unet")
    req.record_inputs(ctx.outputs.record_input)
    steps, guidance = effective_steps_guidance(req)
    info.update(steps_run=steps, guidance_run=guidance)

    # 3. denoise with the adapter installed for this call only
    def call(prompted: dict[str, Any]) -> Any:
        return pipe(
            prompt=req.prompt,
            negative_prompt=req.negative_prompt or None,
            **text_options(pipe, req),
            num_inference_steps=steps,
            guidance_scale=guidance,
            width=req.width,
            height=req.height,
            generator=cpu_generator(req.seed),
            callback_on_step_end=step_callback(steps, progress, cancel),
            **prompted,
        )

    with image_prompted(pipe.unet, adapter, embed, req.image_scale, guidance) as prompted:
        out = run_guarded(registry, lambda: call(prompted), cancel)
    return out.images[0], info


def remix_runner(ctx: TaskContext, req: RemixRequest, progress: ProgressFn | None,
                 cancel: CancelToken | None) -> tuple[Any, dict[str, Any]]:
    """Studio task runner for Remix."""
    return run_remix(ctx, req, progress, cancel)
