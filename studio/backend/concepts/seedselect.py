"""SeedSelect (Samuel et al. 2023, "It's all about where you start"): few-shot seed selection.

Rare concepts fail because the training data is long-tailed, not because the model cannot
draw them: some initial noises z_T do produce them. Given a few example images, SeedSelect
optimises z_T (the model stays frozen) with gradients through a short deterministic DDIM
sampler so that the generated image matches the examples:

- semantic loss: 1 - cosine similarity between the CLIP image embedding (registry role
  "image_encoder") of the decoded predicted clean image x0 and the centroid of the examples'
  embeddings, averaged over the last k=2 denoising steps (more stable than the final image);
- appearance loss: mean squared distance between the generated latent z_0 and the centroid of
  the examples' VAE latents;
- total = lambda * semantic + (1 - lambda) * appearance (lambda = `semantic_weight`).

Bootstrap: optimise once on all examples, then re-optimise from that z_T on random subsets of
the examples for a few iterations each, which gives varied results for a fraction of the cost.
Above 256 px (SD1.5) UNet and VAE calls are wrapped in `torch.utils.checkpoint` so memory
stays bounded by one step; smaller sizes keep the activations and run a third faster.
The optimised noises can be stored with a concept and reused as `latents=` of any pipeline.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image
from torch.utils.checkpoint import checkpoint

from ..common import (
    CancelToken,
    ProgressFn,
    TaskContext,
    base_pipeline,
    configure_pipe,
    cpu_generator,
    run_guarded,
)
from ..images import load_image
from ..models.registry import ModelRegistry
from ..outputs import OutputStore
from ..requests import GenerationParams, RequestError, check_number
from .training import ENCODE_CHUNK, images_to_tensor

MIN_IMAGES, MAX_IMAGES = 3, 20
MAX_BOOTSTRAP = 8
MAX_SAMPLE_STEPS = 50
LAST_K = 2  # predicted clean images of the last k steps feed the semantic loss
# Latent cells above which the UNet is checkpointed: SD1.5 at 256 px (32x32) keeps all
# activations of a 10-step sample in well under a GB; larger sizes recompute them.
CHECKPOINT_LATENT_AREA = 32 * 32
SAMPLER = "DDIM"


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """Centre-crop `image` to the aspect ratio width:height, then resize to width x height."""
    w, h = image.size
    target = width / height
    if w / h > target:  # too wide: crop the sides
        new_w = max(1, round(h * target))
        left = (w - new_w) // 2
        image = image.crop((left, 0, left + new_w, h))
    elif w / h < target:  # too tall: crop top and bottom
        new_h = max(1, round(w / target))
        top = (h - new_h) // 2
        image = image.crop((0, top, w, top + new_h))
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image


def check_image_count(images: Any, lo: int = MIN_IMAGES, hi: int = MAX_IMAGES) -> list[Any]:
    """The example images as a list, with a clear error for too few or too many."""
    if images is None or images == "":
        images = []
    if not isinstance(images, (list, tuple)):
        images = [images]
    if len(images) < lo:
        raise RequestError(
            f"{len(images)} example image{'s' if len(images) != 1 else ''} given; upload at "
            f"least {lo} (and at most {hi}) pictures of the concept"
        )
    if len(images) > hi:
        raise RequestError(f"{len(images)} example images given; the limit is {hi}")
    return list(images)


@dataclass
class SeedSelectRequest(GenerationParams):
    """Optimise the starting noise so the image matches a few examples.

    `steps` is the number of optimisation iterations of the first run; `sample_steps` the
    DDIM steps of the sampler that is differentiated through (and used for the final image).
    `bootstrap` extra variants are re-optimised from the result on random subsets of the
    examples for `bootstrap_steps` iterations each (0: a fifth of `steps`, at least 1).
    `concept` names a SeedSelect concept of the library to start from (its saved noise, and
    its example images when `images` is empty).
    """

    images: list[Any] = field(default_factory=list)
    semantic_weight: float = 0.5
    bootstrap: int = 0
    bootstrap_steps: int = 0
    sample_steps: int = 10
    learning_rate: float = 0.05
    concept: str = ""
    steps: int = 20
    scheduler: str = SAMPLER

    task: ClassVar[str] = "seedselect"
    prompt_required: ClassVar[bool] = False
    image_fields: ClassVar[tuple[str, ...]] = ("images",)

    def validate(self) -> None:
        super().validate()
        if self.scheduler != SAMPLER:
            raise RequestError(
                f"SeedSelect differentiates through the deterministic DDIM sampler; scheduler "
                f"must be 'DDIM', got {self.scheduler!r}"
            )
        if self.fast:
            raise RequestError("fast mode (LCM) is not available for SeedSelect; set fast=false")
        check_number("semantic weight", self.semantic_weight, 0, 1)
        check_number("bootstrap", self.bootstrap, 0, MAX_BOOTSTRAP, integer=True)
        check_number("bootstrap steps", self.bootstrap_steps, 0, 150, integer=True)
        check_number("sample steps", self.sample_steps, 1, MAX_SAMPLE_STEPS, integer=True)
        check_number("learning rate", self.learning_rate, 1e-5, 1.0)
        if not isinstance(self.concept, str):
            raise RequestError("concept must be the name of a SeedSelect concept, or empty")
        self.images = check_image_count(self.images, 0 if self.concept else MIN_IMAGES)
        self.semantic_weight = float(self.semantic_weight)
        self.bootstrap, self.sample_steps = int(self.bootstrap), int(self.sample_steps)
        self.bootstrap_steps = int(self.bootstrap_steps) or max(1, self.steps // 5)
        self.learning_rate = float(self.learning_rate)


    def work(self) -> float:
        """Each optimisation iteration samples `sample_steps` steps and back-propagates
        through them (about 3x a forward pass); then every noise is rendered once."""
        iterations = self.steps + self.bootstrap * self.bootstrap_steps
        passes = iterations * 3 + 1 + self.bootstrap
        return passes * self.sample_steps * self.width * self.height / 1e6 * self.unet_passes()


@dataclass
class Run:
    """One optimisation run: iterations, time and the loss before and after."""

    iterations: int
    seconds: float
    losses: list[dict[str, float]]  # one per iteration, plus the final z_T's
    subset: list[int]
    best: int  # index in `losses` of the z_T returned

    def summary(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations, "seconds": round(self.seconds, 3),
            "subset": self.subset, "loss_start": self.losses[0],
            "loss_end": self.losses[self.best],
            "total_losses": [round(x["total"], 6) for x in self.losses],
        }


class SeedSelector:
    """Differentiable DDIM sampling from z_T and the SeedSelect losses against examples."""

    def __init__(self, pipe: Any, image_encoder: Any, prompt: str, negative_prompt: str,
                 guidance_scale: float, sample_steps: int, width: int, height: int,
                 semantic_weight: float, scheduler: Any, family: Any) -> None:
        self.pipe, self.image_encoder = pipe, image_encoder
        self.unet, self.vae = pipe.unet, pipe.vae
        self.device, self.dtype = self.unet.device, self.unet.dtype
        self.width, self.height = width, height
        self.lam = semantic_weight
        self.guidance = guidance_scale
        self.cfg = guidance_scale > 1.0
        # the prompt as the family's denoiser takes it (SDXL: pooled and size/crop numbers too)
        self.text, self.added = family.denoiser_conditioning(
            pipe, prompt, negative_prompt, self.cfg, width, height)
        self.scheduler = scheduler
        self.scheduler.set_timesteps(sample_steps, device=self.device)
        self.scale = float(getattr(self.vae.config, "scaling_factor", 0.18215))
        proc = getattr(image_encoder, "image_processor", None)
        self.clip_size = _clip_input_size(proc, image_encoder)
        mean = getattr(proc, "image_mean", None) or [0.48145466, 0.4578275, 0.40821073]
        std = getattr(proc, "image_std", None) or [0.26862954, 0.26130258, 0.27577711]
        self.clip_mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.clip_std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.n_iterations = 0  # optimisation iterations run so far (all runs)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        f = int(getattr(self.pipe, "vae_scale_factor", 8))  # 8 for SD1.5, 4 for the toy VAE
        return (1, self.unet.config.in_channels, self.height // f, self.width // f)

    # ------------------------------------------------------------------ building blocks
    def clip_embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N,3,H,W] in [-1,1] -> unit CLIP image embeddings (differentiable preprocessing)."""
        x = (pixels.float().clamp(-1, 1) + 1) / 2
        h, w = x.shape[-2:]
        s = self.clip_size
        scale = s / min(h, w)
        nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        top, left = (nh - s) // 2, (nw - s) // 2
        x = x[..., top:top + s, left:left + s]
        x = (x - self.clip_mean) / self.clip_std
        emb = self.image_encoder(pixel_values=x.to(self.image_encoder.dtype)).image_embeds
        return F.normalize(emb.float(), dim=-1)

    def example_features(self, images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """(unit CLIP embeddings [N,D], scaled VAE latents [N,4,h,w]) of the examples."""

        embs, lats = [], []
        with torch.no_grad():
            for chunk in images_to_tensor(images).split(ENCODE_CHUNK):  # bounded memory
                chunk = chunk.to(self.device)
                embs.append(self.clip_embed(chunk))
                dist = self.vae.encode(chunk.to(self.vae.dtype)).latent_dist
                lats.append(dist.mean.float() * self.scale)
        return torch.cat(embs), torch.cat(lats)

    def _eps(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        zin = torch.cat([z, z]) if self.cfg else z
        zin = self.scheduler.scale_model_input(zin, t).to(self.dtype)
        out = self.unet(zin, t, encoder_hidden_states=self.text,
                        added_cond_kwargs=self.added or None).sample.float()
        if not self.cfg:
            return out
        uncond, cond = out.chunk(2)
        return uncond + self.guidance * (cond - uncond)

    def _decode(self, x0: torch.Tensor) -> torch.Tensor:
        return self.vae.decode((x0 / self.scale).to(self.vae.dtype)).sample.float()

    @property
    def checkpointing(self) -> bool:
        """Recompute activations in the backward pass (bounded memory, ~1/3 more compute)
        only when keeping them would be large: above CHECKPOINT_LATENT_AREA latent cells."""
        _, _, h, w = self.latent_shape
        return torch.is_grad_enabled() and h * w > CHECKPOINT_LATENT_AREA

    def sample(self, z_t: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """DDIM from z_T (gradients flow): (z_0, x0 of the last k steps)."""
        z = z_t
        timesteps = list(self.scheduler.timesteps)
        x0s = []
        for i, t in enumerate(timesteps):
            if self.checkpointing:
                eps = checkpoint(self._eps, z, t, use_reentrant=False)
            else:
                eps = self._eps(z, t)
            out = self.scheduler.step(eps, t, z)
            if i >= len(timesteps) - LAST_K:
                x0s.append(out.pred_original_sample)
            z = out.prev_sample
        return z, x0s

    def losses(self, z_t: torch.Tensor, sem_target: torch.Tensor,
               app_target: torch.Tensor) -> dict[str, torch.Tensor]:
        z0, x0s = self.sample(z_t)
        appearance = F.mse_loss(z0, app_target)
        sems = []
        for x0 in x0s:
            pixels = checkpoint(self._decode, x0, use_reentrant=False) \
                if self.checkpointing else self._decode(x0)
            sems.append(1 - (self.clip_embed(pixels) * sem_target).sum(-1).mean())
        semantic = torch.stack(sems).mean()
        total = self.lam * semantic + (1 - self.lam) * appearance
        return {"total": total, "semantic": semantic, "appearance": appearance}

    # ------------------------------------------------------------------ optimisation
    def optimise(self, z_start: torch.Tensor, emb: torch.Tensor, lat: torch.Tensor,
                 subset: list[int], iterations: int, lr: float,
                 tick: Any = None) -> tuple[torch.Tensor, Run]:
        """Adam on z_T for `iterations` steps against the centroids of `subset`.

        z_T is kept at the norm of `z_start` (about sqrt(numel), where Gaussian noise lives) so
        the sampler still sees plausible starting noise. Returns the best z_T seen.
        """
        t0 = time.perf_counter()
        sem_target = F.normalize(emb[subset].mean(0, keepdim=True), dim=-1)
        app_target = lat[subset].mean(0, keepdim=True)
        radius = float(z_start.float().norm())
        z = torch.nn.Parameter(z_start.detach().float().clone())
        optim = torch.optim.Adam([z], lr=lr)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        history: list[dict[str, float]] = []
        best, best_index = z.detach().clone(), 0
        for _ in range(iterations):
            with torch.enable_grad():
                parts = self.losses(z, sem_target, app_target)
                optim.zero_grad(set_to_none=True)
                scaler.scale(parts["total"]).backward()
            record = {k: float(v.detach()) for k, v in parts.items()}
            history.append(record)
            if record["total"] < history[best_index]["total"] or len(history) == 1:
                best, best_index = z.detach().clone(), len(history) - 1
            scaler.step(optim)
            scaler.update()
            with torch.no_grad():
                z.mul_(radius / z.norm())
            self.n_iterations += 1
            if tick is not None:
                tick()
        with torch.no_grad():  # the loss of the final z_T too
            record = {k: float(v) for k, v in self.losses(z, sem_target, app_target).items()}
        history.append(record)
        if record["total"] < history[best_index]["total"]:
            best, best_index = z.detach().clone(), len(history) - 1
        run = Run(iterations, time.perf_counter() - t0, history, list(subset), best_index)
        return best, run


def _clip_input_size(processor: Any, image_encoder: Any) -> int:
    """Side of the square CLIP input (the processor's crop size, else the model's)."""
    crop = getattr(processor, "crop_size", None)
    if crop is not None:
        height = crop.get("height") if hasattr(crop, "get") else getattr(crop, "height", crop)
        if height:
            return int(height)
    return int(image_encoder.config.image_size)


def initial_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The starting noise z_T for a seed (CPU generator, as every tab uses)."""
    return torch.randn(shape, generator=cpu_generator(seed), dtype=torch.float32)


@dataclass
class SeedSelectOutput:
    """Optimised noises (main first, then bootstrap variants), their runs and the examples."""

    noises: list[torch.Tensor]
    runs: list[Run]
    iterations: int

    def info(self) -> dict[str, Any]:
        first, rest = self.runs[0], self.runs[1:]
        out: dict[str, Any] = {
            "loss_initial": first.losses[0], "loss_final": first.losses[first.best],
            "first_run": first.summary(), "bootstrap_runs": [r.summary() for r in rest],
            "iterations_total": self.iterations,
        }
        if rest:
            out["bootstrap_seconds_mean"] = round(sum(r.seconds for r in rest) / len(rest), 3)
        return out


def run_seedselect(
    registry: ModelRegistry,
    pipe: Any,
    req: SeedSelectRequest,
    examples: list[Image.Image],
    start: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> SeedSelectOutput:
    """Optimise z_T on all examples, then `req.bootstrap` variants on random subsets.

    `pipe` is the configured base pipeline (its UNet, VAE, text encoder are the shared ones).
    """
    image_encoder = registry.component("image_encoder")
    registry.prepare(["unet", *registry.family.shared.values(), "image_encoder"])
    selector = SeedSelector(
        pipe, image_encoder, req.prompt, req.negative_prompt, req.guidance_scale,
        req.sample_steps, req.width, req.height, req.semantic_weight,
        registry.new_scheduler(SAMPLER), registry.family,
    )
    if start is None:
        start = initial_noise(selector.latent_shape, req.seed)
    start = start.to(selector.device)
    if tuple(start.shape) != selector.latent_shape:
        raise RequestError(
            f"the starting noise has shape {tuple(start.shape)} but {req.width}x{req.height} "
            f"needs {selector.latent_shape}; use the size the noise was optimised for"
        )
    emb, lat = selector.example_features(examples)
    total = req.steps + req.bootstrap * req.bootstrap_steps
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)
        if cancel is not None:
            cancel.check("SeedSelect")

    everything = list(range(len(examples)))
    z_main, first = selector.optimise(start, emb, lat, everything, req.steps,
                                      req.learning_rate, tick)
    noises, runs = [z_main.cpu()], [first]
    rng = random.Random(req.seed)
    k = max(1, math.ceil(len(examples) / 2))
    for _ in range(req.bootstrap):
        subset = sorted(rng.sample(everything, k))
        z_var, run = selector.optimise(z_main, emb, lat, subset, req.bootstrap_steps,
                                       req.learning_rate, tick)
        noises.append(z_var.cpu())
        runs.append(run)
    return SeedSelectOutput(noises, runs, selector.n_iterations)


def render_noises(registry: ModelRegistry, pipe: Any, req: GenerationParams,
                  noises: list[torch.Tensor], sample_steps: int,
                  cancel: CancelToken | None = None) -> list[Image.Image]:
    """Images of the pipeline started from each noise (`latents=`), with DDIM."""
    images = []
    for z in noises:
        pipe.scheduler = registry.new_scheduler(SAMPLER)

        def call(z: torch.Tensor = z) -> Any:
            return pipe(
                prompt=req.prompt, negative_prompt=req.negative_prompt or None,
                num_inference_steps=sample_steps, guidance_scale=req.guidance_scale,
                width=req.width, height=req.height, generator=cpu_generator(req.seed),
                latents=z.to(pipe.unet.device, pipe.unet.dtype),
            )

        images.append(run_guarded(registry, call, cancel).images[0])
    return images


def load_examples(values: list[Any], width: int, height: int) -> list[Image.Image]:
    """Decode, check and fit the example images to the output size."""
    return [fit_image(load_image(v, f"example image {i + 1}"), width, height)
            for i, v in enumerate(values)]


def seedselect_runner(ctx: TaskContext, req: SeedSelectRequest, progress: ProgressFn | None,
                      cancel: CancelToken | None) -> tuple[Image.Image, dict[str, Any]]:
    """Studio task runner: optimise, render the main image and the bootstrap variants."""
    start = None
    examples_src: list[Any] = list(req.images)
    if req.concept:
        concept = ctx.concepts.get(req.concept)
        start = concept.noise()
        if not examples_src:
            examples_src = concept.example_paths()
    examples = load_examples(check_image_count(examples_src), req.width, req.height)
    registry = ctx.registry
    pipe = base_pipeline(registry)
    configure_pipe(registry, pipe, req, "unet")
    result = run_seedselect(registry, pipe, req, examples, start, progress, cancel)
    images = render_noises(registry, pipe, req, result.noises, req.sample_steps, cancel)
    # the request records the exact examples used, saved next to the outputs
    req.images = examples
    req.record_inputs(ctx.outputs.record_input)
    info = result.info()
    info["noise_file"] = save_noises(ctx.outputs, result.noises, req)
    info["metadata"] = {"seedselect": dict(info)}
    info["variants"] = save_variants(ctx, req, images[1:])
    info["extra_images"] = images[1:]
    return images[0], info


def save_variants(ctx: TaskContext, req: GenerationParams, images: list[Image.Image]
                  ) -> list[str]:
    """Save the bootstrap variants like any output (the request, and the variant number
    next to it in the PNG); returns their names in the outputs folder."""
    # the variant number goes beside the request (regenerating a variant re-runs the set)
    return [ctx.outputs.name_of(ctx.outputs.save(im, req.to_dict(), ctx.model_name,
                                                 {"variant": i + 1}))
            for i, im in enumerate(images)]


def save_noises(outputs: OutputStore, noises: list[torch.Tensor], req: SeedSelectRequest) -> str:
    """Write the optimised noises (main first) as safetensors next to the outputs; returns
    the file's name in the outputs folder."""
    from safetensors.torch import save_file

    path = outputs.save_file(f"seedselect-{req.seed}", ".safetensors",
                             lambda p: save_file(noise_dict(noises), str(p),
                                                 metadata=noise_metadata(req)))
    return outputs.name_of(path)


def noise_dict(noises: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"noise_{i}": z.detach().float().cpu().contiguous() for i, z in enumerate(noises)}


def noise_metadata(req: SeedSelectRequest) -> dict[str, str]:
    """What the noises were optimised for (all strings, as safetensors metadata requires)."""
    return {"prompt": req.prompt, "negative_prompt": req.negative_prompt,
            "sample_steps": str(req.sample_steps), "guidance_scale": str(req.guidance_scale),
            "width": str(req.width), "height": str(req.height), "sampler": SAMPLER}
