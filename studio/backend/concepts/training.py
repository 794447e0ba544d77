"""Learning a concept from a few images: textual inversion and LoRA (DreamBooth style).

Both minimise the standard diffusion loss: encode the example images with the shared VAE,
add noise at a random timestep, and ask the UNet to predict that noise (or the velocity, for
v-prediction models) given a prompt such as "a photo of <my-dog>".

- Textual inversion trains one new token embedding and nothing else. The new row is an fp32
  parameter fed into the shared text encoder through hooks on its token-embedding layer, so the
  shared tokenizer and text encoder are untouched while training (cancelling leaves nothing
  behind); the concept library then adds the learned row with `load_textual_inversion`.
- LoRA trains a low-rank adapter on the UNet attention projections (to_q, to_k, to_v,
  to_out.0) of the shared UNet under the adapter name of the concept. Base weights never
  receive gradients; the adapter is deleted from the UNet after its weights are copied out (in
  the diffusers LoRA format), so the library loads it back like any other LoRA file.

Training runs inside the GPU queue, so no generation sees the models mid-training.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image

from ..common import CancelToken, ProgressFn
from ..models.modelsets import PHOTO_TEMPLATES
from ..models.registry import ModelRegistry

log = logging.getLogger(__name__)

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
# a batch of prompts as a denoiser takes them: hidden states and the added conditioning
Cond = tuple[torch.Tensor, dict[str, torch.Tensor]]
ENCODE_CHUNK = 4  # images per VAE encode call


@dataclass
class TrainResult:
    """What a training run learned, with its per-step losses."""

    losses: list[float] = field(default_factory=list)
    # (step, loss) on one fixed probe batch (fixed images, noise and timesteps): unlike the
    # training loss it is not dominated by the random noise drawn at each step.
    probe_losses: list[tuple[int, float]] = field(default_factory=list)
    # textual inversion: per text encoder (the family's embedding parts, e.g. "clip_l"),
    # [1, dim] float32 on CPU
    embedding: dict[str, torch.Tensor] | None = None
    lora_state: dict[str, torch.Tensor] | None = None  # LoRA: diffusers-format state dict
    lora_config: dict[str, Any] | None = None


def images_to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """PIL RGB images of one size -> [N, 3, H, W] float tensor in [-1, 1]."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 127.5 - 1 for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def _check_cancel(cancel: CancelToken | None) -> None:
    if cancel is not None:
        cancel.check("training (nothing was saved)")


class _LatentBank:
    """VAE posteriors of the examples (and their mirror images), encoded once."""

    def __init__(self, vae: Any, images: list[Image.Image], device: torch.device,
                 dtype: torch.dtype) -> None:
        pixels = images_to_tensor(images)
        pixels = torch.cat([pixels, pixels.flip(-1)])  # horizontal flips: a free augmentation
        self.scale = float(getattr(vae.config, "scaling_factor", 0.18215))
        self.shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
        means, stds = [], []
        with torch.no_grad():
            for chunk in pixels.split(ENCODE_CHUNK):  # bounded memory at 512 px
                dist = vae.encode(chunk.to(device, dtype)).latent_dist
                means.append(dist.mean.float())
                stds.append(dist.std.float())
        self.mean, self.std = torch.cat(means), torch.cat(stds)

    def __len__(self) -> int:
        return self.mean.shape[0]

    def sample(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        noise = torch.randn(self.mean[idx].shape, generator=gen).to(self.mean.device)
        return (self.mean[idx] + self.std[idx] * noise - self.shift) * self.scale


class _Probe:
    """A fixed batch (images, noise, evenly spread timesteps) to measure progress on."""

    def __init__(self, bank: _LatentBank, sched: Any, seed: int, size: int = 8) -> None:
        gen = torch.Generator("cpu").manual_seed(seed + 7919)
        idx = torch.arange(size) % len(bank)
        self.latents = bank.sample(idx, gen)
        self.noise = torch.randn(self.latents.shape, generator=gen).to(self.latents.device)
        n = sched.config.num_train_timesteps
        self.t = torch.linspace(0, n - 1, size).round().long().to(self.latents.device)
        self.sched = sched

    def loss(self, unet: Any, cond: Cond) -> float:
        with torch.no_grad():
            noisy = self.sched.add_noise(self.latents, self.noise, self.t)
            target = self.noise
            if self.sched.config.prediction_type == "v_prediction":
                target = self.sched.get_velocity(self.latents, self.noise, self.t)
            pred = _denoise(unet, noisy, self.t, _rows(cond, [0] * len(self.t)))
            return float(F.mse_loss(pred.float(), target.float()))


def _probe_every(steps: int) -> int:
    return max(1, steps // 8)


def _noise_scheduler(registry: ModelRegistry) -> Any:
    from diffusers import DDPMScheduler

    config = {k: v for k, v in dict(registry.component("scheduler")).items()
              if not k.startswith("_")}
    return DDPMScheduler.from_config(config)


def _optimiser_step(optim: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    loss: torch.Tensor, result: TrainResult) -> None:
    """One (fp16-scaled) optimiser step; records the loss."""
    optim.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optim)
    scaler.update()
    result.losses.append(float(loss.detach()))


def _denoise(unet: Any, noisy: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
    states, added = cond
    added = {k: v.to(unet.dtype) for k, v in added.items()} or None
    return unet(noisy.to(unet.dtype), t, encoder_hidden_states=states.to(unet.dtype),
                added_cond_kwargs=added).sample


def _rows(cond: Cond, rows: list[int]) -> Cond:
    """The prompts `rows` of a batch of conditioning (states and added tensors)."""
    states, added = cond
    return states[rows], {k: v[rows] for k, v in added.items()}


class Prompts:
    """Prompts as the family's denoiser takes them, from the shared text encoder(s): SD1.5,
    the encoder's last hidden states; SDXL, both encoders' penultimate states side by side,
    the second's pooled projection and the size/crop numbers of the training size (as
    StableDiffusionXLPipeline conditions its UNet). `private` tokenizers (one per encoder)
    may replace the shared ones: textual inversion adds its token to copies."""

    def __init__(self, pipe: Any, family: Any, size: int,
                 private: list[Any] | None = None) -> None:
        self.encoders = [getattr(pipe, te) for _, _, te in family.embedding_parts]
        self.tokenizers = private or [getattr(pipe, tok) for _, tok, _ in family.embedding_parts]
        self.text_time = family.text_time
        self.time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32)

    def __call__(self, prompts: list[str]) -> Cond:
        device = self.encoders[0].device
        ids = [_encode_ids(tok, prompts, device) for tok in self.tokenizers]
        if not self.text_time:
            return self.encoders[0](ids[0])[0], {}
        outs = [te(i, output_hidden_states=True) for te, i in zip(self.encoders, ids,
                                                                  strict=True)]
        states = torch.cat([o.hidden_states[-2] for o in outs], dim=-1)
        pooled = outs[-1].text_embeds
        return states, {"text_embeds": pooled,
                        "time_ids": self.time_ids.to(device).expand(len(prompts), -1)}


def _diffusion_loss(unet: Any, sched: Any, latents: torch.Tensor, cond: Cond,
                    gen: torch.Generator) -> torch.Tensor:
    """Noise-prediction (or v-prediction) MSE at random timesteps."""
    device = latents.device
    noise = torch.randn(latents.shape, generator=gen).to(device)
    t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), generator=gen)
    t = t.to(device)
    noisy = sched.add_noise(latents, noise, t)
    if sched.config.prediction_type == "v_prediction":
        target = sched.get_velocity(latents, noise, t)
    else:
        target = noise
    pred = _denoise(unet, noisy, t, cond)
    return F.mse_loss(pred.float(), target.float())


def _encode_ids(tokenizer: Any, prompts: list[str], device: torch.device) -> torch.Tensor:
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids.to(device)


@contextmanager
def _injected_token(text_encoder: Any, token_id: int, stand_in: int,
                    vector: torch.nn.Parameter) -> Iterator[None]:
    """While active, `token_id` in the input ids reads `vector` instead of an embedding row.

    `token_id` need not exist in the shared embedding matrix: a forward pre-hook looks up
    `stand_in` instead and a forward hook swaps in `vector`, so gradients reach `vector` only.
    """
    emb = text_encoder.get_input_embeddings()
    state: dict[str, torch.Tensor] = {}

    def pre(_mod: Any, args: tuple) -> tuple:
        ids = args[0]
        state["mask"] = ids == token_id
        return (torch.where(state["mask"], torch.full_like(ids, stand_in), ids), *args[1:])

    def post(_mod: Any, _args: tuple, out: torch.Tensor) -> torch.Tensor:
        mask = state["mask"].unsqueeze(-1)
        return torch.where(mask, vector.to(out.dtype), out)

    handles = [emb.register_forward_pre_hook(pre), emb.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def initializer_ids(tokenizer: Any, word: str) -> list[int]:
    """Token ids of the initializer word (without start/end tokens)."""
    return list(tokenizer.encode(word, add_special_tokens=False))


def train_textual_inversion(
    pipe: Any,
    registry: ModelRegistry,
    images: list[Image.Image],
    token: str,
    initializer: str,
    steps: int,
    learning_rate: float,
    seed: int,
    batch_size: int = 4,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    templates: tuple[str, ...] = PHOTO_TEMPLATES,
) -> TrainResult:
    """Learn an embedding of `token` in every text encoder of the family (SDXL: clip_l and
    clip_g) from `images` (same size, multiple of 8), with the token in caption `templates`
    like the ones the model was trained on."""
    family, unet, vae = registry.family, pipe.unet, pipe.vae
    device = unet.device
    torch.manual_seed(seed)
    rng, gen = random.Random(seed), torch.Generator("cpu").manual_seed(seed)

    private, vectors, injected = [], [], []
    for _, tokenizer_role, encoder_role in family.embedding_parts:
        tokenizer, text_encoder = getattr(pipe, tokenizer_role), getattr(pipe, encoder_role)
        own = copy.deepcopy(tokenizer)  # the shared tokenizer stays untouched while training
        own.add_tokens([token])
        init_ids = initializer_ids(tokenizer, initializer)
        with torch.no_grad():
            init = text_encoder.get_input_embeddings().weight[init_ids].float().mean(0)
        vector = torch.nn.Parameter(init.clone())
        private.append(own)
        vectors.append(vector)
        injected.append(_injected_token(text_encoder, own.convert_tokens_to_ids(token),
                                        init_ids[0], vector))
    optim = torch.optim.AdamW(vectors, lr=learning_rate, weight_decay=0.0)
    scaler = torch.amp.GradScaler(device.type, enabled=unet.dtype == torch.float16)

    bank = _LatentBank(vae, images, device, vae.dtype)
    sched = _noise_scheduler(registry)
    result = TrainResult()
    probe = _Probe(bank, sched, seed)
    text = Prompts(pipe, family, images[0].width, private)
    probe_prompt = [templates[0].format(token)]
    with contextlib.ExitStack() as stack:
        for hooks in injected:
            stack.enter_context(hooks)
        for step in range(steps):
            if step % _probe_every(steps) == 0:
                with torch.no_grad():
                    result.probe_losses.append((step, probe.loss(unet, text(probe_prompt))))
            _check_cancel(cancel)
            idx = torch.randint(0, len(bank), (min(batch_size, len(bank)),), generator=gen)
            prompts = [rng.choice(templates).format(token) for _ in range(len(idx))]
            loss = _diffusion_loss(unet, sched, bank.sample(idx, gen), text(prompts), gen)
            _optimiser_step(optim, scaler, loss, result)
            if progress is not None:
                progress(step + 1, steps)
        _check_cancel(cancel)
        with torch.no_grad():
            result.probe_losses.append((steps, probe.loss(unet, text(probe_prompt))))
    result.embedding = {key: v.detach().float().cpu().unsqueeze(0)
                        for (key, _, _), v in zip(family.embedding_parts, vectors, strict=True)}
    return result


def train_lora(
    pipe: Any,
    registry: ModelRegistry,
    images: list[Image.Image],
    prompt_subject: str,
    adapter_name: str,
    steps: int,
    learning_rate: float,
    rank: int,
    seed: int,
    batch_size: int = 4,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    templates: tuple[str, ...] = PHOTO_TEMPLATES,
) -> TrainResult:
    """Train a LoRA on the shared UNet's attention under `adapter_name`, then remove it.

    `prompt_subject` goes into the templates ("a photo of <my-dog> dog"). The returned state
    dict is in the diffusers LoRA format (keys `unet.…lora_A.weight` once saved).
    """
    from diffusers.training_utils import cast_training_params
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet, vae = pipe.unet, pipe.vae
    device = unet.device
    torch.manual_seed(seed)
    rng, gen = random.Random(seed), torch.Generator("cpu").manual_seed(seed)
    bank = _LatentBank(vae, images, device, vae.dtype)
    sched = _noise_scheduler(registry)
    with torch.no_grad():  # the text encoders are frozen: embed every template once
        prompts = [t.format(prompt_subject) for t in templates]
        conds = Prompts(pipe, registry.family, images[0].width)(prompts)

    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                        target_modules=list(LORA_TARGETS))
    unet.add_adapter(config, adapter_name=adapter_name)
    checkpointing = device.type != "cpu" and getattr(unet, "_supports_gradient_checkpointing", 0)
    try:
        params = []
        for name, p in unet.named_parameters():
            train = "lora_" in name and f".{adapter_name}." in name
            p.requires_grad_(train)
            if train:
                params.append(p)
        if not params:
            raise RuntimeError("no LoRA parameters were added to the UNet")
        cast_training_params(unet, dtype=torch.float32)  # fp32 master weights for the adapter
        unet.enable_adapters()
        if checkpointing:
            unet.enable_gradient_checkpointing()
        optim = torch.optim.AdamW(params, lr=learning_rate, weight_decay=1e-4)
        scaler = torch.amp.GradScaler(device.type, enabled=unet.dtype == torch.float16)
        result = TrainResult()
        probe = _Probe(bank, sched, seed)
        for step in range(steps):
            if step % _probe_every(steps) == 0:
                result.probe_losses.append((step, probe.loss(unet, conds)))
            _check_cancel(cancel)
            idx = torch.randint(0, len(bank), (min(batch_size, len(bank)),), generator=gen)
            cond = _rows(conds, [rng.randrange(len(prompts)) for _ in range(len(idx))])
            loss = _diffusion_loss(unet, sched, bank.sample(idx, gen), cond, gen)
            _optimiser_step(optim, scaler, loss, result)
            if progress is not None:
                progress(step + 1, steps)
        _check_cancel(cancel)
        result.probe_losses.append((steps, probe.loss(unet, conds)))
        state = get_peft_model_state_dict(unet, adapter_name=adapter_name)
        state = convert_state_dict_to_diffusers(state)
        result.lora_state = {k: v.detach().to("cpu", torch.float32).contiguous()
                             for k, v in state.items()}
        result.lora_config = {"r": rank, "lora_alpha": rank, "target_modules": list(LORA_TARGETS)}
        return result
    finally:
        if checkpointing:
            unet.disable_gradient_checkpointing()
        unet.delete_adapters(adapter_name)
        if not getattr(unet, "peft_config", None):
            unet.unload_lora()  # no other adapter: give the UNet back its plain layers
        unet.requires_grad_(False)

