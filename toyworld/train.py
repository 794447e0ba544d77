"""Train the toy world's models: `python -m toyworld.train STAGE [--steps N]`.

Stages, in order (each later stage loads the earlier ones from `--work`):

- ``vae``: a small AutoencoderKL, 64x64 RGB -> 16x16x4 latents (L1 + MSE + tiny KL), then the
  latent scaling factor is measured so latents have unit variance, as SD's 0.18215 does.
- ``base``: a CLIP text encoder (single-token words) and a base UNet, trained together with
  the SD1.5 noise schedule (epsilon prediction, 10% empty captions for classifier-free
  guidance, min-SNR loss weighting to converge in few steps).
- ``controlnet``: ``ControlNetModel.from_unet(base)`` (zero convolutions, encoder copied from the
  base UNet), trained on scribble and edge maps of the same scene with the base frozen and 50%
  empty prompts, as the ControlNet paper does.
- ``inpaint``: a 9-channel UNet (noisy latent, mask, masked-image latent) from the base with the
  5 extra input channels zero-initialised; masks cover one shape (prompt = that shape's phrase)
  or a random rectangle (prompt = the caption).
- ``instruct``: an 8-channel InstructPix2Pix UNet (noisy latent + unscaled source latent, extra
  channels zero-initialised) on recolour pairs ("make the circle blue", "make it blue") with the
  paper's text / image / both dropout for its two guidance scales.
- ``gligen``: the base UNet with GLIGEN gated self-attention and the text-box position net; as
  in the GLIGEN paper only the new layers train, so the same layers also turn the inpainting
  UNet into the GLIGEN inpainting UNet without more training.
- ``taesd``: a tiny ``AutoencoderTiny`` distilled from the trained VAE (decoder: the image
  from the VAE's scaled latents, object pixels weighted; encoder: those latents), for the
  studio's live previews.
- ``clip_text``: a ``CLIPTextModelWithProjection`` for the Remix tab's text diffs in the toy
  CLIP image space: the frozen base text encoder plus a ``text_projection`` learned
  contrastively (train_clip's loss) against the frozen shipped image tower.
- ``ip_adapter``: a toy IP-Adapter (Ye et al. 2023: image projection to 4 tokens + decoupled
  cross-attention K/V) for the frozen base UNet with the frozen toy CLIP image tower as image
  encoder, trained to rebuild a scene from its own image embedding (dropped: text alone 45%,
  image alone 10%, both 5%) and, in a quarter of the samples, from the embedding of a
  recoloured or reshaped copy moved along the caption text diff
  (`studio.backend.tasks.remix_space`).
- ``export``: fp16 safetensors in the Hub layout under ``assets/toy`` (``--only taesd`` /
  ``--only clip_text`` / ``--only ip_adapter`` add that one model to an existing export; the
  IP-Adapter in the ``h94/IP-Adapter`` layout, ``models/ip-adapter_sd15.safetensors`` and
  ``models/image_encoder``).

Stages that only add to the shipped models (``taesd``, ``clip_text``, ``ip_adapter``) read the
earlier stages from ``assets/toy`` when ``--work`` does not hold them.

Everything is seeded (torch, scenes by index), so a rerun gives the same weights on the same
machine and library versions. Training data comes from `toyworld.scenes`; images are encoded by
the frozen VAE on the fly (cheap at 64 px), so there is no dataset on disk.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image, ImageDraw

from .scenes import COMMON_COLOURS, SHAPES, SIZE, Scene, random_scene

log = logging.getLogger("toyworld.train")

WORK = Path("build/toy")
ASSETS = Path("assets/toy")
LATENT = SIZE // 4
CROSS_DIM = 64
ATTENTION_WEIGHT = 0.05  # GLIGEN's auxiliary grounding-attention loss (see GroundingAttention)

REPOS = {
    "base": "stable-diffusion",
    "inpaint": "stable-diffusion-inpainting",
    "instruct": "instruct-pix2pix",
    "gligen": "gligen-generation-text-box",
    "gligen_inpaint": "gligen-inpainting-text-box",
    "controlnet": "controlnet-scribble",
    "image_encoder": "clip-vision",
    "taesd": "taesd",
    "clip_text": "clip-text",
    "ip_adapter": "ip-adapter",
}
IP_WEIGHTS = "ip-adapter_sd15.safetensors"


# ----------------------------------------------------------------------------- configs

def vae_config() -> dict[str, Any]:
    return dict(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=8,
        sample_size=SIZE, mid_block_add_attention=False,
    )


def unet_config(**extra: Any) -> dict[str, Any]:
    kw: dict[str, Any] = dict(
        sample_size=LATENT, in_channels=4, out_channels=4,
        block_out_channels=(32, 64, 128), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_DIM, attention_head_dim=4, norm_num_groups=8,
    )
    kw.update(extra)
    return kw


def text_config(vocab_size: int, width: int = CROSS_DIM) -> dict[str, Any]:
    return dict(
        vocab_size=vocab_size, hidden_size=width, intermediate_size=4 * width,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
        projection_dim=width, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1, layer_norm_eps=1e-5,
    )


def scheduler_config() -> dict[str, Any]:
    """SD1.5's noise schedule, so every studio sampler behaves as it does on real weights."""
    return {
        "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
        "skip_prk_steps": True, "steps_offset": 1, "prediction_type": "epsilon",
        "clip_sample": False, "timestep_spacing": "leading",
    }


# ----------------------------------------------------------------------------- data

def to_tensor(images: Iterable[Image.Image]) -> torch.Tensor:
    """PIL RGB images -> (B, 3, H, W) in [-1, 1], as the SD VAE takes them."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def scenes(stage_seed: int, step: int, batch: int, **kw: Any) -> list[Scene]:
    """The batch for one step: scene seeds derived from (stage, step, index), reproducible."""
    return [random_scene(stage_seed * 10_000_000 + step * batch + i, **kw) for i in range(batch)]


def vae_images(step: int, batch: int) -> list[Image.Image]:
    """VAE data: scenes with every colour and shape (rare and held-out ones too, so the
    autoencoder represents whatever a concept may need) and, in 1 of 4, grey rectangles like
    the masked images inpainting encodes."""
    rng = random.Random(step)
    out = []
    for sc in scenes(1, step, batch, kinds=SHAPES + ("cross",), rare_rate=0.15):
        img = sc.render()
        if rng.random() < 0.25:
            d = ImageDraw.Draw(img)
            x0, y0 = rng.randint(0, 48), rng.randint(0, 48)
            d.rectangle((x0, y0, x0 + rng.randint(8, 32), y0 + rng.randint(8, 32)),
                        fill=(127, 127, 127))
        out.append(img)
    return out


# ----------------------------------------------------------------------------- helpers

def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


PROGRESS = "progress.json"  # a resumable stage's step reached, beside its weights


def saved_step(folder: Path) -> int:
    """The step a resumable stage saved in `folder` reached (0: none saved)."""
    path = folder / PROGRESS
    return int(json.loads(path.read_text())["step"]) if path.is_file() else 0


def save_progress(folder: Path, step: int, steps: int) -> None:
    (folder / PROGRESS).write_text(json.dumps({"step": step, "of": steps}))


def lr_at(step: int, steps: int, lr: float, warmup: int = 50) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def run_loop(name: str, params: list[Any], steps: int, lr: float,
             loss_fn: Callable[[int], torch.Tensor], log_every: int = 50,
             save: Callable[[], None] | None = None, save_every: int = 500,
             start: int = 0) -> None:
    """AdamW with warmup + cosine decay and gradient clipping; `save` is called every
    `save_every` steps (so a long stage can be inspected while it runs) and at the end.
    `start` resumes a saved run at that step of the same schedule (AdamW's moments restart)."""
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=1e-2)
    every = [p for g in opt.param_groups for p in g["params"]]
    t0, ema = time.time(), None
    for step in range(start, steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr) * g.get("scale", 1.0)
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(every, 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % log_every == 0 or step == steps - 1:
            log.info("%s step %d/%d loss %.4f (ema %.4f) %.1fs", name, step, steps,
                     loss.item(), ema, time.time() - t0)
        if save is not None and (step + 1) % save_every == 0 and step + 1 < steps:
            save()
    if save is not None:
        save()


class Noise:
    """SD1.5's DDPM forward process and loss weights for epsilon prediction.

    Default: min-SNR(5) weights, uniform timesteps. `layout=True` (GLIGEN) draws 80% of the
    timesteps from the noisier half and weights each by 1/SNR (clipped to 1..50), which turns
    the epsilon loss into an x0 loss there: where objects go is decided at high noise, and the
    plain epsilon loss scales that error by SNR (about 0.01), so it barely trains it. The
    pipeline grounds only the first steps (scheduled sampling), i.e. exactly these timesteps.
    """

    def __init__(self, layout: bool = False) -> None:
        from diffusers import DDPMScheduler

        self.sched = DDPMScheduler(**{k: v for k, v in scheduler_config().items()
                                      if k in ("beta_start", "beta_end", "beta_schedule",
                                                "num_train_timesteps", "prediction_type")})
        ac = self.sched.alphas_cumprod
        snr = ac / (1 - ac)
        self.layout = layout
        if layout:
            self.weight = torch.clamp(1.0 / snr, min=1.0, max=50.0)
        else:
            self.weight = torch.clamp(snr, max=5.0) / snr

    def __call__(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy latents, the epsilon target, timesteps)."""
        noise = torch.randn_like(latents)
        b = latents.shape[0]
        t = torch.randint(0, 1000, (b,))
        if not self.layout:
            return self.sched.add_noise(latents, noise, t), noise, t
        r = torch.rand(b)
        t = torch.where(r < 0.8, torch.randint(500, 1000, (b,)), t)
        t = torch.where(r < 0.4, torch.randint(850, 1000, (b,)), t)
        zt = self.sched.add_noise(latents, noise, t)
        # SD's schedule leaves a trace of the image at t=999 (SNR 0.005), but sampling starts
        # from pure noise. Where objects are can be read from that trace, so a model trained
        # on it learns to place objects by it and ignores the boxes; at sampling time the
        # "trace" is random and so is the layout. So 40% of the samples start from pure noise
        # at t >= 850, with the epsilon that makes the target x0 the true image: there the
        # boxes are the only clue to where things go.
        blind = r < 0.4
        if blind.any():
            ac = self.sched.alphas_cumprod[t].view(b, 1, 1, 1)
            pure = torch.randn_like(latents)
            target = (pure - ac.sqrt() * latents) / (1 - ac).sqrt()
            m = blind.view(b, 1, 1, 1)
            zt, noise = torch.where(m, pure, zt), torch.where(m, target, noise)
        return zt, noise, t

    def loss(self, pred: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
             where: torch.Tensor | None = None) -> torch.Tensor:
        """Min-SNR weighted MSE; `where` (B,1,h,w) weights latent pixels (normalised)."""
        err = (pred.float() - noise).pow(2)
        if where is None:
            per = err.mean(dim=(1, 2, 3))
        else:
            per = (err * where).mean(dim=(1, 2, 3)) / where.mean(dim=(1, 2, 3))
        return (per * self.weight[t]).mean()


def object_weights(batch_scenes: list[Scene], weight: float) -> torch.Tensor:
    """(B,1,h,w) latent-pixel weights: `weight` where a latent pixel covers any object, else 1.

    Objects are a small part of each image, so the plain loss is dominated by the flat
    background; weighting the object pixels makes the caption's colour and shape count."""
    masks = []
    for sc in batch_scenes:
        m = np.zeros((sc.size, sc.size), np.float32)
        for i in range(len(sc.shapes)):
            m = np.maximum(m, sc.mask(i).astype(np.float32))
        masks.append(torch.from_numpy(m))
    fg = F.max_pool2d(torch.stack(masks)[:, None], SIZE // LATENT)
    return 1.0 + (weight - 1.0) * fg


def trained(work: Path, name: str) -> Path:
    """`work / name`, or the shipped fp16 export of it when the earlier stage was not run in
    `work` (load with ``dtype=torch.float32``); `name` is a `work` folder such as "vae"."""
    if (work / name).exists():
        return work / name
    shipped = {"clip-vision": REPOS["image_encoder"], "clip-text": REPOS["clip_text"]}
    return ASSETS / shipped[name] if name in shipped else ASSETS / REPOS["base"] / name


class Frozen:
    """The trained VAE + tokenizer + text encoder, frozen, for the later stages."""

    def __init__(self, work: Path, text: bool = True) -> None:
        from diffusers import AutoencoderKL

        self.vae = AutoencoderKL.from_pretrained(trained(work, "vae"), dtype=torch.float32)
        self.vae.eval().requires_grad_(False)
        self.scale = float(self.vae.config.scaling_factor)
        if text:
            from transformers import CLIPTextModel, CLIPTokenizer

            self.tok = CLIPTokenizer.from_pretrained(trained(work, "tokenizer"))
            self.te = CLIPTextModel.from_pretrained(trained(work, "text_encoder"),
                                                    dtype=torch.float32).eval()
            self.te.requires_grad_(False)
            self._pooled: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode(self, images: list[Image.Image], scaled: bool = True,
               sample: bool = True) -> torch.Tensor:
        dist = self.vae.encode(to_tensor(images)).latent_dist
        z = dist.sample() if sample else dist.mode()
        return z * self.scale if scaled else z

    def ids(self, prompts: list[str]) -> torch.Tensor:
        return self.tok(prompts, padding="max_length", max_length=self.tok.model_max_length,
                        truncation=True, return_tensors="pt").input_ids

    @torch.no_grad()
    def text(self, prompts: list[str]) -> torch.Tensor:
        return self.te(self.ids(prompts))[0]

    @torch.no_grad()
    def pooled(self, prompts: list[str]) -> torch.Tensor:
        """Pooled phrase embeddings (what the GLIGEN pipeline feeds its position net), cached:
        the toy world has few distinct phrases and a step needs up to batch x 30 of them."""
        todo = sorted({p for p in prompts if p not in self._pooled})
        if todo:
            for p, e in zip(todo, self.te(self.ids(todo)).pooler_output, strict=True):
                self._pooled[p] = e
        return torch.stack([self._pooled[p] for p in prompts])


def drop(prompts: list[str], rng: random.Random, p: float) -> list[str]:
    return ["" if rng.random() < p else s for s in prompts]


# ----------------------------------------------------------------------------- stages

def train_vae(work: Path, steps: int, batch: int = 16) -> None:
    from diffusers import AutoencoderKL

    seed_all(1)
    vae = AutoencoderKL(**vae_config()).train()

    def loss_fn(step: int) -> torch.Tensor:
        x = to_tensor(vae_images(step, batch))
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        kl = post.kl().mean() / (LATENT * LATENT * 4)
        return F.l1_loss(rec, x) + F.mse_loss(rec, x) + 1e-4 * kl

    run_loop("vae", list(vae.parameters()), steps, 1e-3, loss_fn)
    vae.eval()
    with torch.no_grad():
        z = torch.cat([vae.encode(to_tensor(vae_images(10_000 + i, 64))).latent_dist.sample()
                       for i in range(4)])
    scale = float(1.0 / z.std())
    vae.register_to_config(scaling_factor=round(scale, 5))
    log.info("vae latent std %.4f -> scaling_factor %.5f", float(z.std()), scale)
    vae.save_pretrained(work / "vae")


def train_base(work: Path, steps: int, batch: int = 32) -> None:
    """Text encoder + base UNet from scratch, with the object pixels of the loss weighted x3:
    with the plain loss the UNet hedges towards the empty background (objects are a small
    part of each image), and classifier-free guidance then often erases a single shape."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from studio.backend.models.tokenizer_vocab import write_tokenizer

    seed_all(2)
    vocab = write_tokenizer(work / "tokenizer")
    te = CLIPTextModel(CLIPTextConfig(**text_config(vocab))).train()
    unet = UNet2DConditionModel(**unet_config()).train()
    frozen = Frozen(work, text=False)
    tok = CLIPTokenizer.from_pretrained(work / "tokenizer")
    noise = Noise()
    rng = random.Random(2)

    def loss_fn(step: int) -> torch.Tensor:
        batch_scenes = scenes(2, step, batch)
        z = frozen.encode([s.render() for s in batch_scenes])
        prompts = drop([s.caption for s in batch_scenes], rng, 0.1)
        ids = tok(prompts, padding="max_length", max_length=77, truncation=True,
                  return_tensors="pt").input_ids
        cond = te(ids)[0]
        zt, eps, t = noise(z)
        return noise.loss(unet(zt, t, cond).sample, eps, t, object_weights(batch_scenes, 3.0))

    def save() -> None:
        unet.save_pretrained(work / "unet")
        te.save_pretrained(work / "text_encoder")

    params = list(unet.parameters()) + list(te.parameters())
    run_loop("base", params, steps, 1e-3, loss_fn, save=save)


def control_map(scene: Scene, rng: random.Random) -> Image.Image:
    """A control map of `scene` as the studio may hand one to the ControlNet: a scribble
    (1-3 px), a scribble drawn larger and downscaled (grey anti-aliased lines, what a 512 px
    sketch or map becomes at 64 px), the edge map, or OpenCV Canny (the canny annotator)."""
    r = rng.random()
    if r < 0.4:
        return scene.scribble(width=rng.randint(1, 3))
    if r < 0.6:
        k = rng.choice((2, 4, 8))
        big = Scene([replace(s, cx=s.cx * k + k // 2, cy=s.cy * k + k // 2, size=s.size * k)
                     for s in scene.shapes], size=SIZE * k)
        return big.scribble(width=rng.randint(1, 3) * k).resize(
            (SIZE, SIZE), Image.Resampling.LANCZOS)
    if r < 0.8:
        return scene.edges()
    import cv2

    edges = cv2.Canny(np.asarray(scene.render()), 100, 200)
    return Image.fromarray(edges).convert("RGB")


def train_controlnet(work: Path, steps: int, batch: int = 32) -> None:
    from diffusers import ControlNetModel, UNet2DConditionModel

    seed_all(3)
    frozen = Frozen(work)
    unet = UNet2DConditionModel.from_pretrained(work / "unet").eval().requires_grad_(False)
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 64)).train()
    noise = Noise()
    rng = random.Random(3)

    def loss_fn(step: int) -> torch.Tensor:
        batch_scenes = scenes(3, step, batch)
        z = frozen.encode([s.render() for s in batch_scenes])
        maps = [control_map(s, rng) for s in batch_scenes]
        cond_img = (to_tensor(maps) + 1) / 2  # ControlNet images are in [0, 1]
        text = frozen.text(drop([s.caption for s in batch_scenes], rng, 0.5))
        zt, eps, t = noise(z)
        down, mid = cn(zt, t, text, controlnet_cond=cond_img, return_dict=False)
        pred = unet(zt, t, text, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample
        return noise.loss(pred, eps, t)

    run_loop("controlnet", list(cn.parameters()), steps, 5e-4, loss_fn)
    cn.save_pretrained(work / "controlnet")


def widen_conv_in(unet: Any, in_channels: int) -> Any:
    """A copy of `unet` with `in_channels` inputs: the first 4 copied, the rest zero."""
    from diffusers import UNet2DConditionModel

    wide = UNet2DConditionModel.from_config({**unet.config, "in_channels": in_channels})
    state = unet.state_dict()
    w = state["conv_in.weight"]
    new_w = torch.zeros(w.shape[0], in_channels, *w.shape[2:])
    new_w[:, :4] = w
    state["conv_in.weight"] = new_w
    wide.load_state_dict(state)
    return wide


def extend_example(scene: Scene, rng: random.Random) -> tuple[Image.Image, str] | None:
    """What extending a canvas (outpainting) and a large empty mask ask of the inpainting
    model, which the box-shaped masks alone never teach: 3 in 4, a strip from an image edge
    that holds one shape (prompt = its phrase: draw it in the new area); 1 in 4, a strip at
    an edge that holds nothing (prompt = the caption or none: plain background). None when
    the empty strip would cut a shape (the caller falls back to a plain example)."""
    mask = Image.new("L", (SIZE, SIZE), 0)
    d = ImageDraw.Draw(mask)
    side = rng.choice("lrtb")
    if rng.random() < 0.75:
        s = rng.choice(scene.shapes)
        x0, y0, x1, y1 = (v + rng.randint(2, 12) * sign
                          for v, sign in zip(s.box, (-1, -1, 1, 1), strict=True))
        if rng.random() < 0.5:  # the whole side, as a canvas extension
            x0, y0, x1, y1 = (x0, 0, x1, SIZE) if side in "lr" else (0, y0, SIZE, y1)
        x0, y0, x1, y1 = {"l": (0, y0, x1, y1), "r": (x0, y0, SIZE, y1),
                          "t": (x0, 0, x1, y1), "b": (x0, y0, x1, SIZE)}[side]
        d.rectangle((max(0, x0), max(0, y0), min(SIZE, x1) - 1, min(SIZE, y1) - 1), fill=255)
        return mask, s.phrase
    w = rng.randint(8, 32)
    box = {"l": (0, 0, w, SIZE), "r": (SIZE - w, 0, SIZE, SIZE),
           "t": (0, 0, SIZE, w), "b": (0, SIZE - w, SIZE, SIZE)}[side]
    d.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    covered = np.asarray(mask) > 0
    if any((scene.mask(i) & covered).any() for i in range(len(scene.shapes))):
        return None
    return mask, scene.caption if rng.random() < 0.5 else ""


def inpaint_example(scene: Scene, rng: random.Random, extend: float = 0.0,
                    colourless: float = 0.0) -> tuple[Image.Image, str]:
    """A mask and its prompt: one shape's box grown by 2-8 px (prompt = that shape's phrase,
    sometimes the caption) or a random rectangle (prompt = the caption); with `extend` > 0,
    that share are outpainting strips (`extend_example`); with `colourless` > 0, that share of
    the shape prompts name the kind only ("a square"), so the colour must come from the
    partly noised image: what inpaint sketch (painted colours, strength < 1) asks."""
    if extend and rng.random() < extend:
        example = extend_example(scene, rng)
        if example is not None:
            return example
    mask = Image.new("L", (SIZE, SIZE), 0)
    d = ImageDraw.Draw(mask)
    if rng.random() < 0.75:
        s = rng.choice(scene.shapes)
        g = rng.randint(2, 8)
        x0, y0, x1, y1 = s.box
        d.rectangle((max(0, x0 - g), max(0, y0 - g), min(SIZE, x1 + g) - 1,
                     min(SIZE, y1 + g) - 1), fill=255)
        prompt = s.phrase if rng.random() < 0.8 else scene.caption
        if colourless and prompt == s.phrase and rng.random() < colourless:
            prompt = f"a {s.kind}"
    else:
        x0, y0 = rng.randint(0, 40), rng.randint(0, 40)
        d.rectangle((x0, y0, x0 + rng.randint(12, 40), y0 + rng.randint(12, 40)), fill=255)
        prompt = scene.caption
    return mask, prompt


COLOURLESS_FROM = 750  # inpaint steps from here add colourless shape prompts (sketch)


def train_inpaint(work: Path, steps: int, batch: int = 32, start: int = 0,
                  extend: float = 0.3, colourless: float = 0.25) -> None:
    """The 9-channel inpainting UNet from the base (the shipped one when `work` lacks it) on
    the toy recipe with outpainting strips in `extend` of the examples (`extend_example`)
    and, from step COLOURLESS_FROM, colourless shape prompts in `colourless` of the shape
    examples. Saved every 250 steps with `progress.json`, so `start` resumes it."""
    from diffusers import UNet2DConditionModel

    out = work / "unet_inpaint"
    seed_all(4 + start)
    frozen = Frozen(work)
    if start:
        unet = UNet2DConditionModel.from_pretrained(out, dtype=torch.float32).train()
    else:
        base = UNet2DConditionModel.from_pretrained(trained(work, "unet"), dtype=torch.float32)
        unet = widen_conv_in(base, 9).train()
    noise = Noise()
    rng = random.Random(4 + start)
    reached = {"step": start}

    def loss_fn(step: int) -> torch.Tensor:
        reached["step"] = step + 1
        batch_scenes = scenes(4, step, batch)
        images = [s.render() for s in batch_scenes]
        share = colourless if step >= COLOURLESS_FROM else 0.0
        examples = [inpaint_example(s, rng, extend=extend, colourless=share)
                    for s in batch_scenes]
        masks = torch.stack([torch.from_numpy(np.asarray(m, np.float32) / 255.0)
                             for m, _ in examples])[:, None]
        x = to_tensor(images)
        masked = x * (masks < 0.5)  # as StableDiffusionInpaintPipeline prepares it
        with torch.no_grad():
            z = frozen.vae.encode(x).latent_dist.sample() * frozen.scale
            zm = frozen.vae.encode(masked).latent_dist.sample() * frozen.scale
        m = F.interpolate(masks, size=(LATENT, LATENT))
        text = frozen.text(drop([p for _, p in examples], rng, 0.1))
        zt, eps, t = noise(z)
        return noise.loss(unet(torch.cat([zt, m, zm], 1), t, text).sample, eps, t)

    def save() -> None:
        unet.save_pretrained(out)
        save_progress(out, reached["step"], steps)
        log.info("inpaint saved at step %d", reached["step"])

    run_loop("inpaint", list(unet.parameters()), steps, 5e-4, loss_fn, save=save,
             save_every=250, start=start)


def instruct_example(scene: Scene, rng: random.Random) -> tuple[Scene, Scene, str]:
    """(before, after, instruction): one shape recoloured. The instruction names the shape
    ("make the circle blue") only when its kind is unique in the scene, so it is never
    ambiguous; one-shape scenes also get "make it blue"."""
    unique = [i for i, s in enumerate(scene.shapes)
              if sum(o.kind == s.kind for o in scene.shapes) == 1]
    if not unique:  # e.g. two circles: keep one, so "make the circle ..." means it
        scene = Scene(scene.shapes[:1])
        unique = [0]
    i = rng.choice(unique)
    colour = rng.choice([c for c in COMMON_COLOURS if c != scene.shapes[i].colour])
    after, instruction = scene.recoloured(i, colour)
    if len(scene.shapes) == 1 and rng.random() < 0.5:
        instruction = f"make it {colour}"
    return scene, after, instruction


def train_instruct(work: Path, steps: int, batch: int = 32) -> None:
    """InstructPix2Pix on recolour pairs. Object pixels weigh x3 in the loss: recolouring
    every shape instead of the named one is then as costly as it is wrong."""
    from diffusers import UNet2DConditionModel

    seed_all(5)
    frozen = Frozen(work)
    unet = widen_conv_in(UNet2DConditionModel.from_pretrained(work / "unet"), 8).train()
    noise = Noise()
    rng = random.Random(5)

    def loss_fn(step: int) -> torch.Tensor:
        # More single-shape scenes than the base sees: "make it <colour>" needs them.
        batch_scenes = scenes(5, step, batch, max_shapes=rng.choice((1, 2, 3)))
        ex = [instruct_example(s, rng) for s in batch_scenes]
        src = frozen.encode([a.render() for a, _, _ in ex], scaled=False, sample=False)  # IP2P
        z = frozen.encode([b.render() for _, b, _ in ex])
        prompts, keep = [], []
        for _, _, text in ex:  # the paper's dropout: 5% text, 5% image, 5% both
            r = rng.random()
            prompts.append("" if r < 0.05 or 0.10 <= r < 0.15 else text)
            keep.append(0.0 if 0.05 <= r < 0.15 else 1.0)
        src = src * torch.tensor(keep)[:, None, None, None]
        zt, eps, t = noise(z)
        pred = unet(torch.cat([zt, src], 1), t, frozen.text(prompts)).sample
        return noise.loss(pred, eps, t, object_weights([a for a, _, _ in ex], 3.0))

    run_loop("instruct", list(unet.parameters()), steps, 5e-4, loss_fn,
             save=lambda: unet.save_pretrained(work / "unet_instruct"))


def gligen_new_params(unet: Any) -> list[torch.nn.Parameter]:
    return [p for n, p in unet.named_parameters() if "fuser" in n or "position_net" in n]


def open_gates(unet: Any) -> None:
    """Start the gated layers as zero-output residuals with open gates (tanh(1) = 0.76).

    GLIGEN starts with closed gates (alpha = 0), so nothing behind them gets a gradient until
    the gates open: at this scale they hover at zero for the whole run. Zeroing the layers'
    output projections instead (ControlNet's zero-convolution trick) keeps the UNet exactly
    as trained at step 0 while the grounding path learns from the first step."""
    from diffusers.models.attention import GatedSelfAttentionDense

    with torch.no_grad():
        for module in unet.modules():
            if isinstance(module, GatedSelfAttentionDense):
                module.alpha_attn.fill_(1.0)
                module.alpha_dense.fill_(1.0)
                for layer in (module.attn.to_out[0], module.ff.net[-1]):
                    layer.weight.zero_()
                    layer.bias.zero_()


def gligen_unet(work: Path) -> Any:
    """The base UNet with GLIGEN's gated self-attention and text-box position net added."""
    from diffusers import UNet2DConditionModel

    base = UNet2DConditionModel.from_pretrained(work / "unet")
    unet = UNet2DConditionModel.from_config({**base.config, "attention_type": "gated"})
    missing, unexpected = unet.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all("fuser" in k or "position_net" in k for k in missing)
    open_gates(unet)
    return unet


def grounding(frozen: Frozen, batch_scenes: list[Scene], rng: random.Random,
              pick: Callable[[Scene], list[int]] | None = None,
              max_objs: int = 30) -> tuple[dict[str, torch.Tensor], list[list[int]]]:
    """GLIGEN's inputs for a batch, as the pipeline builds them: normalised xyxy boxes, the
    pooled text embedding of each box's phrase, and a mask of the boxes in use. `pick` chooses
    which shapes get a box (default: all, and none in 10% of the scenes)."""
    batch = len(batch_scenes)
    boxes = torch.zeros(batch, max_objs, 4)
    masks = torch.zeros(batch, max_objs)
    phrases = [""] * (batch * max_objs)
    chosen = []
    for b, s in enumerate(batch_scenes):
        if pick is not None:
            idx = pick(s)
        else:
            idx = [] if rng.random() < 0.1 else list(range(len(s.shapes)))
        chosen.append(idx)
        items = s.boxes()
        for j, k in enumerate(idx):
            boxes[b, j] = torch.tensor(items[k]["box"])
            masks[b, j] = 1.0
            phrases[b * max_objs + j] = items[k]["phrase"]
    emb = frozen.pooled(phrases).view(batch, max_objs, -1)
    return {"boxes": boxes, "positive_embeddings": emb, "masks": masks}, chosen


class GroundingAttention:
    """An auxiliary loss on GLIGEN's gated self-attention: visual tokens inside box j should
    attend to grounding token j, and tokens outside every box to none of the box tokens.

    The gated self-attention has no position encoding of its own; it must find each box from
    the UNet's features alone, and at this scale the diffusion loss alone did not teach it to
    (after 600 steps boxes changed the loss by under 0.1%). Supervising the attention
    directly, as layout-guided attention methods do, teaches the query/key alignment from the
    start. It is a training-time loss only: the pipeline runs the standard GLIGEN layers."""

    def __init__(self, unet: Any) -> None:
        from diffusers.models.attention import GatedSelfAttentionDense

        self.seen: list[tuple[Any, torch.Tensor, torch.Tensor]] = []
        for module in unet.modules():
            if isinstance(module, GatedSelfAttentionDense):
                module.register_forward_pre_hook(self._record)

    def _record(self, module: Any, args: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.seen.append((module, args[0], args[1]))

    def loss(self, gligen: dict[str, torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(())
        for module, x, objs in self.seen:
            b, n, _ = x.shape
            side = math.isqrt(n)
            h = module.norm1(torch.cat([x, module.linear(objs)], dim=1))
            attn = module.attn
            q = attn.to_q(h[:, :n]).view(b, n, attn.heads, -1).transpose(1, 2)
            k = attn.to_k(h).view(b, h.shape[1], attn.heads, -1).transpose(1, 2)
            logp = (q @ k.transpose(-1, -2) * attn.scale).log_softmax(-1)[..., n:]  # B,H,N,M
            centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
            cy, cx = torch.meshgrid(centres, centres, indexing="ij")
            cx, cy = cx.flatten()[None, :, None], cy.flatten()[None, :, None]  # 1,N,1
            bx = gligen["boxes"][:, None]  # B,1,M,4
            used = gligen["masks"][:, None] > 0  # B,1,M
            inside = ((cx >= bx[..., 0]) & (cx < bx[..., 2]) & (cy >= bx[..., 1])
                      & (cy < bx[..., 3]) & used).float()  # B,N,M
            # inside box j: attend to token j; outside every box: attend to no real box token
            pull = -(logp.mean(1) * inside).sum() / inside.sum().clamp(min=1)
            mass = (logp.exp() * used[:, None].float()).sum(-1).clamp(max=1 - 1e-4)  # B,H,N
            outside = 1.0 - inside.amax(-1)  # B,N
            push = -(torch.log1p(-mass).mean(1) * outside).sum() / outside.sum().clamp(min=1)
            total = total + pull + push
        count = max(1, len(self.seen))
        self.seen.clear()
        return total / count


def train_gligen(work: Path, steps: int, batch: int = 32, start: int = 0) -> None:
    """The GLIGEN UNet. Unlike the paper, which freezes SD, the whole UNet is fine-tuned (the
    new gated layers at 5x the learning rate): the gated self-attention has no position
    encoding of its own, and the frozen toy features expose too little of where each pixel
    is for it to find the boxes (frozen, 600 steps left objects in their boxes at chance).
    `start` > 0 resumes from the checkpoint saved at that step."""
    from diffusers import UNet2DConditionModel

    seed_all(6 + start)
    frozen = Frozen(work)
    if start:
        unet = UNet2DConditionModel.from_pretrained(work / "unet_gligen").train()
    else:
        unet = gligen_unet(work).train()
    noise = Noise(layout=True)
    rng = random.Random(6)
    attention = GroundingAttention(unet)

    def loss_fn(step: int) -> torch.Tensor:
        batch_scenes = scenes(6, step, batch)
        z = frozen.encode([s.render() for s in batch_scenes])
        gligen, _ = grounding(frozen, batch_scenes, rng)
        # Half the captions are dropped: then the boxes' phrases are all the model has to go
        # on, which makes it learn to use them (with a full caption they add only position).
        text = frozen.text(drop([s.caption for s in batch_scenes], rng, 0.5))
        zt, eps, t = noise(z)
        pred = unet(zt, t, text, cross_attention_kwargs={"gligen": gligen}).sample
        return (noise.loss(pred, eps, t, object_weights(batch_scenes, 3.0))
                + ATTENTION_WEIGHT * attention.loss(gligen))

    new = gligen_new_params(unet)
    ids = {id(p) for p in new}
    old = [p for p in unet.parameters() if id(p) not in ids]
    run_loop("gligen", [{"params": new, "scale": 1.0}, {"params": old, "scale": 0.2}], steps,
             1e-3, loss_fn, save=lambda: unet.save_pretrained(work / "unet_gligen"), start=start)


def box_keep_mask(gligen: dict[str, torch.Tensor], size: int = LATENT) -> torch.Tensor:
    """(B,1,h,w): 0 inside the used boxes, 1 elsewhere, exactly as the GLIGEN pipeline's
    `draw_inpaint_mask_from_boxes` draws it on the latent grid."""
    out = torch.ones(gligen["boxes"].shape[0], 1, size, size)
    for b, (bxs, used) in enumerate(zip(gligen["boxes"], gligen["masks"], strict=True)):
        for box, on in zip(bxs, used, strict=True):
            if on:
                x0, y0, x1, y1 = (int(v * size) for v in box.tolist())
                out[b, 0, y0:y1, x0:x1] = 0
    return out


def train_gligen_inpaint(work: Path, steps: int, batch: int = 32) -> None:
    """GLIGEN inpainting ("inside boxes"): the GLIGEN UNet widened to 9 input channels in the
    pipeline's order (noisy latent, image latent outside the boxes, keep-mask) with the extra
    channels zero-initialised; some shapes of a scene get boxes and are regenerated."""
    from diffusers import UNet2DConditionModel

    seed_all(9)
    frozen = Frozen(work)
    unet = widen_conv_in(UNet2DConditionModel.from_pretrained(work / "unet_gligen"), 9).train()
    noise = Noise(layout=True)
    rng = random.Random(9)

    def pick(s: Scene) -> list[int]:
        return sorted(rng.sample(range(len(s.shapes)), rng.randint(1, len(s.shapes))))

    attention = GroundingAttention(unet)

    def loss_fn(step: int) -> torch.Tensor:
        batch_scenes = scenes(9, step, batch)
        z = frozen.encode([s.render() for s in batch_scenes])
        gligen, _ = grounding(frozen, batch_scenes, rng, pick)
        keep = box_keep_mask(gligen)
        text = frozen.text(drop([s.caption for s in batch_scenes], rng, 0.1))
        zt, eps, t = noise(z)
        pred = unet(torch.cat([zt, z * keep, keep], 1), t, text,
                    cross_attention_kwargs={"gligen": gligen}).sample
        return (noise.loss(pred, eps, t, 1.0 + 2.0 * (1 - keep))
                + ATTENTION_WEIGHT * attention.loss(gligen))

    run_loop("gligen_inpaint", list(unet.parameters()), steps, 5e-4, loss_fn,
             save=lambda: unet.save_pretrained(work / "unet_gligen_inpaint"))


def vision_config() -> dict[str, Any]:
    return dict(
        hidden_size=CROSS_DIM, intermediate_size=4 * CROSS_DIM, num_attention_heads=4,
        num_hidden_layers=3, image_size=SIZE, patch_size=8, projection_dim=CROSS_DIM,
    )


def image_processor_config() -> dict[str, Any]:
    """CLIP's preprocessing at the toy world's size (the studio reads crop_size from it)."""
    return {
        "image_processor_type": "CLIPImageProcessor",
        "crop_size": {"height": SIZE, "width": SIZE}, "size": {"shortest_edge": SIZE},
        "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "do_convert_rgb": True, "do_rescale": True, "rescale_factor": 1 / 255,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
    }


def clip_loss(img: torch.Tensor, txt: torch.Tensor, captions: list[str],
              log_temp: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric contrastive loss on (B, D) image and text embeddings; scenes with the
    same caption are all positives (soft targets)."""
    logits = (F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
              * log_temp.exp().clamp(max=100))
    same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32)
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                  + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean())


def train_clip(work: Path, steps: int, batch: int = 64) -> None:
    """A CLIP image tower for SeedSelect's semantic loss, trained contrastively against the
    frozen toy text encoder (a locked text tower plus a learned linear projection, as LiT
    does). It sees every colour and shape, the rare and held-out ones too, as real CLIP has
    seen the long tail the diffusion model has not."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    seed_all(7)
    frozen = Frozen(work)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision_config())).train()
    text_proj = torch.nn.Linear(CROSS_DIM, CROSS_DIM, bias=False)
    log_temp = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def loss_fn(step: int) -> torch.Tensor:
        batch_scenes = scenes(7, step, batch, kinds=SHAPES + ("cross",), rare_rate=0.15)
        img = model(pixel_values=clip_pixels([s.render() for s in batch_scenes])).image_embeds
        captions = [s.caption for s in batch_scenes]
        return clip_loss(img, text_proj(frozen.pooled(captions)), captions, log_temp)

    params = [*model.parameters(), *text_proj.parameters(), log_temp]
    run_loop("clip", params, steps, 1e-3, loss_fn)
    model.save_pretrained(work / "clip-vision")
    (work / "clip-vision" / "preprocessor_config.json").write_text(
        json.dumps(image_processor_config()))


def taesd_config() -> dict[str, Any]:
    """TAESD's architecture at the toy VAE's 4x (not SD's 8x) downsampling: 3 blocks."""
    return dict(
        encoder_block_out_channels=(24, 24, 24), decoder_block_out_channels=(24, 24, 24),
        num_encoder_blocks=(1, 1, 1), num_decoder_blocks=(1, 1, 1), latent_channels=4,
    )


def train_taesd(work: Path, steps: int, batch: int = 16, pool: int = 2048) -> None:
    """Distil the VAE into a TAESD: the decoder learns to draw the image from the VAE's
    scaled latents (the toy VAE reconstructs its scenes almost exactly, so the image is the
    VAE's decode), the encoder the VAE's scaled latents. Object pixels weigh x5 (a preview
    must get the shapes' colours right; the background is most of each image). The latents
    of a pool of scenes are computed once. The VAE comes from `work` or the shipped one."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    seed_all(11)
    source = work / "vae" if (work / "vae").exists() else ASSETS / REPOS["base"] / "vae"
    vae = AutoencoderKL.from_pretrained(source, dtype=torch.float32).eval()
    vae.requires_grad_(False)
    scale = float(vae.config.scaling_factor)
    chunk = min(pool, 64)
    images = torch.cat([to_tensor(vae_images(50_000 + i, chunk)) for i in range(pool // chunk)])
    with torch.no_grad():
        latents = torch.cat([vae.encode(images[i:i + chunk]).latent_dist.sample() * scale
                             for i in range(0, len(images), chunk)])
    background = images.flatten(2).median(dim=2).values.median(dim=0).values.view(1, 3, 1, 1)
    taesd = AutoencoderTiny(**taesd_config()).train()

    def loss_fn(step: int) -> torch.Tensor:
        pick = torch.randint(0, len(images), (batch,),
                             generator=torch.Generator().manual_seed(step))
        x, z = images[pick], latents[pick]
        weight = 1.0 + 4.0 * ((x - background).abs().amax(1, keepdim=True) > 0.2).float()
        out = taesd.decode(z).sample
        rec = (weight * ((out - x).abs() + (out - x) ** 2)).mean()
        return rec + 0.1 * F.mse_loss(taesd.encode(x).latents, z)

    run_loop("taesd", list(taesd.parameters()), steps, 5e-3, loss_fn, log_every=50,
             save=lambda: taesd.save_pretrained(work / "taesd"), save_every=250)


# ----------------------------------------------------------------------------- remix

def clip_pixels(images: list[Image.Image]) -> torch.Tensor:
    """CLIP preprocessing of 64 px images (what the CLIPImageProcessor config does)."""
    cfg = image_processor_config()
    mean = torch.tensor(cfg["image_mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["image_std"]).view(1, 3, 1, 1)
    return ((to_tensor(images) + 1) / 2 - mean) / std


def frozen_vision(work: Path) -> Any:
    from transformers import CLIPVisionModelWithProjection

    vision = CLIPVisionModelWithProjection.from_pretrained(trained(work, "clip-vision"),
                                                           dtype=torch.float32)
    return vision.eval().requires_grad_(False)


@torch.no_grad()
def image_embeds(vision: Any, images: list[Image.Image]) -> torch.Tensor:
    """(B, 64) unnormalised CLIP image embeddings: what IP-Adapter's projection takes."""
    return vision(pixel_values=clip_pixels(images)).image_embeds


def single_captions() -> list[str]:
    return [f"a {c} {k}" for c in COMMON_COLOURS for k in SHAPES]


@torch.no_grad()
def clip_text_retrieval(vision: Any, text_embeds: Callable[[list[str]], torch.Tensor],
                        n: int = 256) -> float:
    """Image -> caption top-1 over `n` held-out single-object scenes among the 12 common
    single-object captions."""
    captions = single_captions()
    txt = F.normalize(text_embeds(captions), dim=-1)
    sc = [random_scene(900_000 + i, max_shapes=1, rare_rate=0.0) for i in range(n)]
    img = F.normalize(image_embeds(vision, [s.render() for s in sc]), dim=-1)
    pred = (img @ txt.T).argmax(1).tolist()
    return sum(captions[p] == s.caption for p, s in zip(pred, sc, strict=True)) / n


def train_clip_text(work: Path, steps: int, batch: int = 64) -> None:
    """The text tower of the toy CLIP space for text diffs: the frozen base text encoder
    (pooled EOS token) and a `text_projection` trained with train_clip's contrastive loss
    (soft targets for equal captions, learned temperature) against the frozen shipped image
    tower, which stays as it is (the IP-Adapter and SeedSelect use it)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    seed_all(13)
    frozen = Frozen(work)
    vision = frozen_vision(work)
    cfg = CLIPTextConfig(**{k: v for k, v in frozen.te.config.to_dict().items()
                            if k in text_config(1)})
    model = CLIPTextModelWithProjection(cfg)
    model.text_model.load_state_dict(frozen.te.state_dict())
    model.eval().requires_grad_(False)
    model.text_projection.requires_grad_(True)
    log_temp = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def loss_fn(step: int) -> torch.Tensor:
        batch_scenes = scenes(13, step, batch, kinds=SHAPES + ("cross",), rare_rate=0.15)
        img = image_embeds(vision, [s.render() for s in batch_scenes])
        captions = [s.caption for s in batch_scenes]
        return clip_loss(img, model.text_projection(frozen.pooled(captions)), captions,
                         log_temp)

    run_loop("clip_text", [*model.text_projection.parameters(), log_temp], steps, 1e-2,
             loss_fn, log_every=100)
    acc = clip_text_retrieval(vision, lambda c: model.text_projection(frozen.pooled(c)))
    log.info("clip_text: image->caption top-1 %.3f (12 captions, 256 scenes), temp %.1f",
             acc, math.exp(log_temp.item()))
    model.save_pretrained(work / "clip-text")
    for f in trained(work, "tokenizer").iterdir():
        shutil.copy(f, work / "clip-text")


def export_clip_text(work: Path, out: Path) -> None:
    from transformers import CLIPTextModelWithProjection

    dest = out / REPOS["clip_text"]
    CLIPTextModelWithProjection.from_pretrained(work / "clip-text", dtype=torch.float32).half(
        ).save_pretrained(dest, safe_serialization=True)
    for f in trained(work, "tokenizer").iterdir():
        shutil.copy(f, dest)


def attn2_modules(unet: Any) -> list[Any]:
    """The cross-attention modules in `unet.attn_processors` order: the k-th is IP-Adapter's
    `ip_adapter.{2k+1}` (diffusers' `_convert_ip_adapter_attn_to_diffusers`)."""
    return [unet.get_submodule(name.rsplit(".", 1)[0]) for name in unet.attn_processors
            if name.endswith("attn2.processor")]


def install_ip_adapter(unet: Any, flat: dict[str, torch.Tensor] | None = None) -> None:
    """Give `unet` IP-Adapter processors and image projection through diffusers' own loader:
    from `flat` (the file's flat keys) or, new, with to_k_ip / to_v_ip copied from each
    cross-attention's to_k / to_v (as the IP-Adapter paper initialises them)."""
    if flat is None:
        torch.manual_seed(17)
        proj, norm = torch.nn.Linear(CROSS_DIM, 4 * CROSS_DIM), torch.nn.LayerNorm(CROSS_DIM)
        flat = {"image_proj.proj.weight": proj.weight, "image_proj.proj.bias": proj.bias,
                "image_proj.norm.weight": norm.weight, "image_proj.norm.bias": norm.bias}
        for i, attn in enumerate(attn2_modules(unet)):
            flat[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"] = attn.to_k.weight
            flat[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"] = attn.to_v.weight
    nested: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        head, rest = key.split(".", 1)
        nested[head][rest] = value.detach().clone().float()
    unet._load_ip_adapter_weights([nested], low_cpu_mem_usage=False)


def ip_adapter_state(unet: Any) -> dict[str, torch.Tensor]:
    """The installed IP-Adapter as the flat `ip-adapter_sd15.safetensors` keys."""
    flat = {}
    procs = [p for p in unet.attn_processors.values() if hasattr(p, "to_k_ip")]
    for i, proc in enumerate(procs):
        flat[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"] = proc.to_k_ip[0].weight
        flat[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"] = proc.to_v_ip[0].weight
    layer = unet.encoder_hid_proj.image_projection_layers[0]
    for name, value in layer.state_dict().items():
        flat["image_proj." + name.replace("image_embeds", "proj")] = value
    return {k: v.detach().contiguous().clone() for k, v in flat.items()}


def ip_adapter_params(unet: Any) -> list[torch.nn.Parameter]:
    procs = [p for p in unet.attn_processors.values() if hasattr(p, "to_k_ip")]
    return [*(q for p in procs for q in p.parameters()), *unet.encoder_hid_proj.parameters()]


def ip_scene(seed: int) -> Scene:
    """IP-Adapter data: mostly (70%) one shape, else two."""
    return random_scene(seed, max_shapes=1 if random.Random(seed).random() < 0.7 else 2)


def diff_source(scene: Scene, rng: random.Random) -> tuple[Scene, str, str]:
    """A copy of `scene` with one shape in another colour (75%) or kind, and the text diff
    (from, to) that turns the copy back into `scene`: the captions or the bare words."""
    i = rng.randrange(len(scene.shapes))
    shape = scene.shapes[i]
    if rng.random() < 0.75:
        other = replace(shape, colour=rng.choice([c for c in COMMON_COLOURS
                                                  if c != shape.colour]))
        words = (other.colour, shape.colour)
    else:
        other = replace(shape, kind=rng.choice([k for k in SHAPES if k != shape.kind]))
        words = (other.kind, shape.kind)
    shapes = list(scene.shapes)
    shapes[i] = other
    src = Scene(shapes, scene.size)
    return (src, src.caption, scene.caption) if rng.random() < 0.5 else (src, *words)


def train_ip_adapter(work: Path, steps: int, batch: int = 32, diff_rate: float = 0.25) -> None:
    """IP-Adapter for the frozen base UNet: only the image projection and the decoupled
    to_k_ip / to_v_ip train. The UNet rebuilds each scene from the frozen CLIP image tower's
    embedding of the same picture (IP-Adapter's recipe), with text / image / both conditions
    dropped 45% / 10% / 5% (an empty prompt with a picture is the Remix tab's usual call; a
    zero embedding is what diffusers feeds as the unconditional image). In `diff_rate` of
    the samples the embedding is that of a copy with one shape recoloured or reshaped, moved
    towards the scene along the clip_text text diff by a random amount (remix_space's
    `text_diff`, as the studio computes it), so text diffs land on the edited scene.
    Objects weigh x5 in the min-SNR epsilon loss. Sampling with an empty prompt: at guidance
    7.5 an IP scale of 0.5-0.7 works (1.0 over-saturates against the zero-embedding negative:
    mixed colours); at guidance 3, scale 1.0."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModelWithProjection

    from studio.backend.tasks.remix_space import text_diff

    seed_all(17)
    frozen = Frozen(work)
    vision = frozen_vision(work)
    text_tower = CLIPTextModelWithProjection.from_pretrained(trained(work, "clip-text"),
                                                             dtype=torch.float32).eval()
    text_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def text_emb(prompt: str) -> torch.Tensor:
        if prompt not in text_cache:
            text_cache[prompt] = text_tower(frozen.ids([prompt])).text_embeds[0]
        return text_cache[prompt]

    unet = UNet2DConditionModel.from_pretrained(trained(work, "unet"), dtype=torch.float32)
    unet.eval().requires_grad_(False)
    install_ip_adapter(unet)
    params = ip_adapter_params(unet)
    for q in params:
        q.requires_grad_(True)
    noise = Noise()
    rng = random.Random(17)

    def loss_fn(step: int) -> torch.Tensor:
        batch_scenes = [ip_scene(17 * 10_000_000 + step * batch + i) for i in range(batch)]
        images = [s.render() for s in batch_scenes]
        z = frozen.encode(images)
        diffs = [(i, *diff_source(s, rng), rng.uniform(0.4, 0.9))
                 for i, s in enumerate(batch_scenes) if rng.random() < diff_rate]
        emb = image_embeds(vision, images + [d[1].render() for d in diffs])
        for j, (i, _, frm, to, amount) in enumerate(diffs):
            emb[i] = text_diff(emb[batch + j], text_emb(frm), text_emb(to), amount)
        emb = emb[:batch].clone()
        prompts = [s.caption for s in batch_scenes]
        for i in range(batch):
            r = rng.random()
            if r < 0.15:
                emb[i] = 0.0
            if r < 0.05 or r >= 0.15 and r < 0.6:
                prompts[i] = ""
        zt, eps, t = noise(z)
        pred = unet(zt, t, frozen.text(prompts),
                    added_cond_kwargs={"image_embeds": [emb[:, None, :]]}).sample
        return noise.loss(pred, eps, t, object_weights(batch_scenes, 5.0))

    def save() -> None:
        save_file(ip_adapter_state(unet), str(work / IP_WEIGHTS))

    run_loop("ip_adapter", params, steps, 1e-3, loss_fn, save=save, save_every=250)


@torch.no_grad()
def ip_adapter_check(unet: Any, seed: int = 0) -> torch.Tensor:
    """A fixed UNet call with text and image conditions, to compare two copies."""
    g = torch.Generator().manual_seed(seed)
    zt = torch.randn(2, 4, LATENT, LATENT, generator=g)
    cond = torch.randn(2, 77, CROSS_DIM, generator=g)
    emb = torch.randn(2, 1, CROSS_DIM, generator=g)
    t = torch.tensor([100, 700])
    return unet(zt, t, cond, added_cond_kwargs={"image_embeds": [emb]}).sample


def export_ip_adapter(work: Path, out: Path) -> None:
    """`models/ip-adapter_sd15.safetensors` (fp16) + `models/image_encoder` (the toy CLIP
    image tower), as in h94/IP-Adapter; then load it as the studio does (diffusers'
    `load_ip_adapter` on the exported base pipeline) and check it gives the trained UNet's
    outputs (the same base UNet with the fp16-rounded adapter installed directly)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from safetensors.torch import load_file, save_file

    dest = out / REPOS["ip_adapter"] / "models"
    dest.mkdir(parents=True, exist_ok=True)
    flat = load_file(str(work / IP_WEIGHTS))
    save_file({k: v.half().contiguous() for k, v in flat.items()}, str(dest / IP_WEIGHTS))
    frozen_vision(work).half().save_pretrained(dest / "image_encoder", safe_serialization=True)
    shutil.copy(trained(work, "clip-vision") / "preprocessor_config.json",
                dest / "image_encoder")

    base = out / REPOS["base"] if (out / REPOS["base"]).exists() else ASSETS / REPOS["base"]
    unet = UNet2DConditionModel.from_pretrained(base / "unet", dtype=torch.float32)
    install_ip_adapter(unet, {k: v.half().float() for k, v in flat.items()})
    pipe = StableDiffusionPipeline.from_pretrained(
        str(base), safety_checker=None, requires_safety_checker=False, dtype=torch.float32)
    pipe.load_ip_adapter(str(out / REPOS["ip_adapter"]), subfolder="models",
                         weight_name=IP_WEIGHTS, image_encoder_folder=None)
    err = float((ip_adapter_check(pipe.unet) - ip_adapter_check(unet)).abs().max())
    if err > 1e-4:
        raise RuntimeError(f"exported IP-Adapter does not round-trip (max error {err:.2e})")
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    log.info("exported %s (%.0f kB), round-trip max error %.1e", dest, size / 1e3, err)


# ----------------------------------------------------------------------------- export

def export_taesd(work: Path, out: Path) -> None:
    from diffusers import AutoencoderTiny

    AutoencoderTiny.from_pretrained(work / "taesd").half().save_pretrained(
        out / REPOS["taesd"], safe_serialization=True)


def export_inpaint(work: Path, out: Path) -> None:
    from diffusers import UNet2DConditionModel

    UNet2DConditionModel.from_pretrained(work / "unet_inpaint").half().save_pretrained(
        out / REPOS["inpaint"] / "unet", safe_serialization=True)


def export(work: Path, out: Path, only: str = "") -> None:
    """fp16 safetensors in the Hub layout the studio's registry loads (`only="taesd"`,
    "clip_text", "ip_adapter" or "inpaint": just that model, into an existing export)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextModel

    from studio.backend.models.tiny import save_pipeline_index

    if only:
        {"taesd": export_taesd, "clip_text": export_clip_text,
         "ip_adapter": export_ip_adapter, "inpaint": export_inpaint}[only](work, out)
        return
    if out.exists():
        shutil.rmtree(out)
    base = out / REPOS["base"]
    half = {"safe_serialization": True}
    UNet2DConditionModel.from_pretrained(work / "unet").half().save_pretrained(
        base / "unet", **half)
    AutoencoderKL.from_pretrained(work / "vae").half().save_pretrained(base / "vae", **half)
    CLIPTextModel.from_pretrained(work / "text_encoder").half().save_pretrained(
        base / "text_encoder", **half)
    shutil.copytree(work / "tokenizer", base / "tokenizer")
    (base / "scheduler").mkdir(parents=True)
    (base / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_config()))
    save_pipeline_index(base, "StableDiffusionPipeline", {
        "unet": ("diffusers", "UNet2DConditionModel"), "vae": ("diffusers", "AutoencoderKL"),
        "text_encoder": ("transformers", "CLIPTextModel"),
        "tokenizer": ("transformers", "CLIPTokenizer"),
        "scheduler": ("diffusers", "PNDMScheduler"),
        "safety_checker": (None, None), "feature_extractor": (None, None),
    })
    inpaint = UNet2DConditionModel.from_pretrained(work / "unet_inpaint")
    inpaint.half().save_pretrained(out / REPOS["inpaint"] / "unet", **half)
    UNet2DConditionModel.from_pretrained(work / "unet_instruct").half().save_pretrained(
        out / REPOS["instruct"] / "unet", **half)
    ControlNetModel.from_pretrained(work / "controlnet").half().save_pretrained(
        out / REPOS["controlnet"], **half)
    for key, folder in (("gligen", "unet_gligen"), ("gligen_inpaint", "unet_gligen_inpaint")):
        UNet2DConditionModel.from_pretrained(work / folder).half().save_pretrained(
            out / REPOS[key] / "unet", **half)
    from transformers import CLIPVisionModelWithProjection

    CLIPVisionModelWithProjection.from_pretrained(work / "clip-vision").half().save_pretrained(
        out / REPOS["image_encoder"], **half)
    shutil.copy(work / "clip-vision" / "preprocessor_config.json", out / REPOS["image_encoder"])
    export_taesd(work, out)
    export_clip_text(work, out)
    export_ip_adapter(work, out)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log.info("exported to %s: %.1f MB", out, total / 1e6)


STAGES = {
    "vae": (train_vae, 1000),
    "base": (train_base, 4500),
    "controlnet": (train_controlnet, 1200),
    "inpaint": (train_inpaint, 1200),
    "instruct": (train_instruct, 2000),
    "gligen": (train_gligen, 2000),
    "gligen_inpaint": (train_gligen_inpaint, 800),
    "clip": (train_clip, 3000),
    "taesd": (train_taesd, 1500),
    "clip_text": (train_clip_text, 400),
    "ip_adapter": (train_ip_adapter, 1200),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=[*STAGES, "export"])
    p.add_argument("--steps", type=int, help="training steps (default: the stage's own)")
    p.add_argument("--work", type=Path, default=WORK, help="fp32 checkpoints folder")
    p.add_argument("--out", type=Path, default=ASSETS, help="export folder")
    p.add_argument("--only", choices=["taesd", "clip_text", "ip_adapter", "inpaint"], default="",
                   help="export: only this model, into an existing export")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--resume", type=int, default=0, metavar="STEP",
                   help="gligen and inpaint: continue from the checkpoint saved at STEP")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage == "export":
        export(args.work, args.out, args.only)
        return
    fn, default_steps = STAGES[args.stage]
    if args.resume:
        if args.stage not in ("gligen", "inpaint"):
            p.error("--resume is supported for the gligen and inpaint stages only")
        fn(args.work, args.steps or default_steps, start=args.resume)
    else:
        fn(args.work, args.steps or default_steps)


if __name__ == "__main__":
    main()

