"""Train the toy SDXL world: `python -m toyworld.train_xl STAGE [--steps N] [--resume]`.

SDXL's architecture at toy scale, on the toy scenes (`toyworld.scenes`), for `--models
toy-xl`:

- ``base``: two CLIP text encoders (a plain one, 64 wide, and one with a projection, 96 wide,
  as SDXL's CLIP ViT-L and OpenCLIP bigG) and an SDXL UNet: no attention at the highest
  resolution, linear projections, cross-attention over both encoders' penultimate hidden
  states side by side, and the `text_time` embedding of the six size/crop numbers plus the
  second encoder's pooled, projected embedding. Dropped captions (10%) are zero embeddings,
  as SDXL's pipeline gives an empty negative prompt (`force_zeros_for_empty_prompt`).

- ``controlnet``: an SDXL ControlNet (`text_time` conditioning too) from the base UNet, on the
  toy world's scribbles, edge maps and Canny maps (one model for the scribble and canny types,
  as the toy set's).
- ``inpaint``: the base UNet widened to 9 input channels, on the toy inpainting recipe with
  outpainting strips (`toyworld.train.inpaint_example` with `extend`).
- ``instruct``: the base UNet widened to 8 channels, InstructPix2Pix on recolour pairs.

The VAE and the tokenizer are the toy world's (SDXL's VAE is SD's architecture with its own
scaling factor; the toy VAE serves both worlds), read from `build/toy` or the shipped
`assets/toy`; the later stages read the base stage's text encoders and UNet, frozen.

Every stage saves its weights (fp32) every `--save-every` steps with the step reached
(`progress.json`) under `checkpoints/toy-xl/<stage>`, which is committed, and `--resume`
continues from there on the same learning-rate schedule (the batches follow the step; AdamW's
moments and the noise draws restart), so a stage longer than one working session is run in
pieces across sessions.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from studio.backend.models.tiny_xl import scheduler_config  # SDXL base's own

from .scenes import SIZE
from .train import (
    LATENT,
    Frozen,
    Noise,
    control_map,
    drop,
    inpaint_example,
    instruct_example,
    object_weights,
    run_loop,
    save_progress,
    saved_step,
    scenes,
    seed_all,
    text_config,
    to_tensor,
    trained,
    widen_conv_in,
)

log = logging.getLogger("toyworld.train_xl")

# committed: a stage longer than a working session resumes from here in the next one
WORK = Path("checkpoints/toy-xl")
TOY_WORK = Path("build/toy")  # the toy world's stages (VAE, tokenizer), else assets/toy
TEXT_DIM, TEXT_DIM_2 = 64, 96
TIME_DIM = 8  # addition_time_embed_dim
# SDXL's micro-conditioning at the toy size: original size, crop top-left, target size
TIME_IDS = (SIZE, SIZE, 0, 0, SIZE, SIZE)
ASSETS_XL = Path("assets/toy-xl")  # what `--models toy-xl` loads (models.builtin.TOY_XL_DIR)


def unet_config(**extra: Any) -> dict[str, Any]:
    """SDXL's UNet layout at the toy world's width."""
    kw: dict[str, Any] = dict(
        sample_size=LATENT, in_channels=4, out_channels=4,
        block_out_channels=(32, 64, 128), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 4, 8),
        cross_attention_dim=TEXT_DIM + TEXT_DIM_2, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=TIME_DIM,
        projection_class_embeddings_input_dim=6 * TIME_DIM + TEXT_DIM_2, norm_num_groups=8,
    )
    kw.update(extra)
    return kw


def encode_prompts(tok: Any, te: Any, te2: Any, prompts: list[str], keep: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-attention states, pooled) as SDXL's pipeline makes them: each encoder's
    penultimate hidden states side by side, the second's projected pooled output; rows where
    `keep` is 0 are zeros (a dropped caption)."""
    ids = tok(prompts, padding="max_length", max_length=77, truncation=True,
              return_tensors="pt").input_ids
    first = te(ids, output_hidden_states=True).hidden_states[-2]
    out2 = te2(ids, output_hidden_states=True)
    states = torch.cat([first, out2.hidden_states[-2]], dim=-1)
    mask = keep.view(-1, 1, 1).to(states)
    return states * mask, out2.text_embeds * keep.view(-1, 1).to(states)


def time_ids(batch: int) -> torch.Tensor:
    return torch.tensor([TIME_IDS] * batch, dtype=torch.float32)


def train_base(work: Path, steps: int, batch: int = 32, resume: bool = False,
               save_every: int = 250) -> None:
    """Both text encoders and the SDXL UNet from scratch (object pixels of the loss weighted
    x3, as the toy base: objects are a small part of each image)."""
    from diffusers import UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    out = work / "base"

    def fresh() -> dict[str, Any]:
        shutil.copytree(trained(TOY_WORK, "tokenizer"), out / "tokenizer", dirs_exist_ok=True)
        vocab = len(CLIPTokenizer.from_pretrained(out / "tokenizer"))
        te = CLIPTextModel(CLIPTextConfig(**text_config(vocab, TEXT_DIM)))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_config(vocab, TEXT_DIM_2)))
        return {"unet": UNet2DConditionModel(**unet_config()), "text_encoder": te,
                "text_encoder_2": te2}

    def load(folder: Path) -> dict[str, Any]:
        return {"unet": UNet2DConditionModel.from_pretrained(folder / "unet"),
                "text_encoder": CLIPTextModel.from_pretrained(folder / "text_encoder"),
                "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(
                    folder / "text_encoder_2")}

    models: dict[str, Any] = {}
    start, rng, reached, save = resumable(out, "base", steps, resume, 20, models, fresh, load)
    unet, te, te2 = (models[k].train() for k in ("unet", "text_encoder", "text_encoder_2"))
    tok = CLIPTokenizer.from_pretrained(out / "tokenizer")
    frozen = Frozen(TOY_WORK, text=False)
    noise = Noise()

    def loss_fn(step: int) -> torch.Tensor:
        reached["step"] = step + 1
        batch_scenes = scenes(20, step, batch)
        z = frozen.encode([s.render() for s in batch_scenes])
        prompts = [s.caption for s in batch_scenes]
        keep = torch.tensor([0.0 if p == "" else 1.0 for p in drop(prompts, rng, 0.1)])
        states, pooled = encode_prompts(tok, te, te2, prompts, keep)
        zt, eps, t = noise(z)
        pred = unet(zt, t, states, added_cond_kwargs={
            "text_embeds": pooled, "time_ids": time_ids(len(z))}).sample
        return noise.loss(pred, eps, t, object_weights(batch_scenes, 3.0))

    params = [*unet.parameters(), *te.parameters(), *te2.parameters()]
    run_loop("xl-base", params, steps, 1e-3, loss_fn, save=save, save_every=save_every,
             start=start)


class Text:
    """The base stage's tokenizer and both text encoders, frozen, for the later stages."""

    def __init__(self, work: Path) -> None:
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        src = work / "base"
        self.tok = CLIPTokenizer.from_pretrained(src / "tokenizer")
        self.te = CLIPTextModel.from_pretrained(src / "text_encoder").eval()
        self.te2 = CLIPTextModelWithProjection.from_pretrained(src / "text_encoder_2").eval()
        self.te.requires_grad_(False)
        self.te2.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(states, pooled) with an empty prompt as zeros, as the SDXL pipelines give it."""
        keep = torch.tensor([0.0 if p == "" else 1.0 for p in prompts])
        return encode_prompts(self.tok, self.te, self.te2, prompts, keep)


def base_unet(work: Path, train: bool = False) -> Any:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(work / "base" / "unet")
    return unet.train() if train else unet.eval().requires_grad_(False)


def resumable(out: Path, name: str, steps: int, resume: bool, seed: int,
              models: dict[str, Any], fresh: Any, load: Any
              ) -> tuple[int, random.Random, dict[str, int], Any]:
    """The start step, an rng, the step counter and a `save` for a stage saved in `out`:
    `models` is filled by `load(out)` when resuming, else by `fresh()`; `save` writes each
    model under its key and the step reached (`progress.json`)."""
    start = saved_step(out) if resume else 0
    seed_all(seed + start)  # a resumed run draws fresh noise; its scenes follow the step
    out.mkdir(parents=True, exist_ok=True)
    models.update(load(out) if start else fresh())
    if start:
        log.info("resuming %s at step %d of %d", name, start, steps)
    reached = {"step": start}

    def save() -> None:
        for key, model in models.items():
            model.save_pretrained(out / key)
        save_progress(out, reached["step"], steps)
        log.info("%s saved at step %d", name, reached["step"])

    return start, random.Random(seed + start), reached, save


def train_controlnet(work: Path, steps: int, batch: int = 32, resume: bool = False,
                     save_every: int = 250) -> None:
    """An SDXL ControlNet from the base UNet (its `text_time` embedding copied) on the toy
    control maps; prompts dropped half the time, so the map alone must place the shapes."""
    from diffusers import ControlNetModel

    unet = base_unet(work)
    text, frozen, noise = Text(work), Frozen(TOY_WORK, text=False), Noise()
    models: dict[str, Any] = {}
    start, rng, reached, save = resumable(
        work / "controlnet", "xl-controlnet", steps, resume, 30, models,
        lambda: {"controlnet": ControlNetModel.from_unet(
            unet, conditioning_embedding_out_channels=(16, 32, 64)).train()},
        lambda out: {"controlnet": ControlNetModel.from_pretrained(out / "controlnet").train()})
    cn = models["controlnet"]

    def loss_fn(step: int) -> torch.Tensor:
        reached["step"] = step + 1
        batch_scenes = scenes(30, step, batch)
        z = frozen.encode([s.render() for s in batch_scenes])
        cond_img = (to_tensor([control_map(s, rng) for s in batch_scenes]) + 1) / 2
        states, pooled = text(drop([s.caption for s in batch_scenes], rng, 0.5))
        added = {"text_embeds": pooled, "time_ids": time_ids(len(z))}
        zt, eps, t = noise(z)
        down, mid = cn(zt, t, states, controlnet_cond=cond_img, added_cond_kwargs=added,
                       return_dict=False)
        pred = unet(zt, t, states, added_cond_kwargs=added,
                    down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample
        return noise.loss(pred, eps, t)

    run_loop("xl-controlnet", list(cn.parameters()), steps, 5e-4, loss_fn, save=save,
             save_every=save_every, start=start)


def widened_stage(work: Path, stage: str, steps: int, resume: bool, seed: int,
                  channels: int) -> tuple[int, random.Random, dict[str, int], Any, Any]:
    """`resumable` for a stage training the base UNet widened to `channels` inputs (the
    new ones zero): (start, rng, step counter, save, the UNet in training mode)."""
    from diffusers import UNet2DConditionModel

    models: dict[str, Any] = {}
    start, rng, reached, save = resumable(
        work / stage, f"xl-{stage}", steps, resume, seed, models,
        lambda: {"unet": widen_conv_in(base_unet(work, train=True), channels)},
        lambda out: {"unet": UNet2DConditionModel.from_pretrained(out / "unet")})
    return start, rng, reached, save, models["unet"].train()


def train_inpaint(work: Path, steps: int, batch: int = 32, resume: bool = False,
                  save_every: int = 250) -> None:
    """SDXL's inpainting UNet (9 channels: noisy latents, mask, masked-image latents, as
    StableDiffusionXLInpaintPipeline prepares them) on the toy recipe with outpainting
    strips in 30% of the examples."""
    import numpy as np
    import torch.nn.functional as F

    text, frozen, noise = Text(work), Frozen(TOY_WORK, text=False), Noise()
    start, rng, reached, save, unet = widened_stage(work, "inpaint", steps, resume, 40, 9)

    def loss_fn(step: int) -> torch.Tensor:
        reached["step"] = step + 1
        batch_scenes = scenes(40, step, batch)
        examples = [inpaint_example(s, rng, extend=0.3) for s in batch_scenes]
        masks = torch.stack([torch.from_numpy(np.asarray(m, np.float32) / 255.0)
                             for m, _ in examples])[:, None]
        x = to_tensor([s.render() for s in batch_scenes])
        with torch.no_grad():
            z = frozen.vae.encode(x).latent_dist.sample() * frozen.scale
            zm = frozen.vae.encode(x * (masks < 0.5)).latent_dist.sample() * frozen.scale
        m = F.interpolate(masks, size=(LATENT, LATENT))
        states, pooled = text(drop([p for _, p in examples], rng, 0.1))
        zt, eps, t = noise(z)
        pred = unet(torch.cat([zt, m, zm], 1), t, states, added_cond_kwargs={
            "text_embeds": pooled, "time_ids": time_ids(len(z))}).sample
        return noise.loss(pred, eps, t)

    run_loop("xl-inpaint", list(unet.parameters()), steps, 5e-4, loss_fn, save=save,
             save_every=save_every, start=start)


def train_instruct(work: Path, steps: int, batch: int = 32, resume: bool = False,
                   save_every: int = 250) -> None:
    """SDXL InstructPix2Pix (8 channels; the source image's unscaled latent mode, as
    StableDiffusionXLInstructPix2PixPipeline prepares it) on recolour pairs, with the
    paper's dropout (5% text, 5% image, 5% both) and object pixels weighted x3."""
    text, frozen, noise = Text(work), Frozen(TOY_WORK, text=False), Noise()
    start, rng, reached, save, unet = widened_stage(work, "instruct", steps, resume, 50, 8)

    def loss_fn(step: int) -> torch.Tensor:
        reached["step"] = step + 1
        batch_scenes = scenes(50, step, batch, max_shapes=rng.choice((1, 2, 3)))
        ex = [instruct_example(s, rng) for s in batch_scenes]
        src = frozen.encode([a.render() for a, _, _ in ex], scaled=False, sample=False)
        z = frozen.encode([b.render() for _, b, _ in ex])
        prompts, keep = [], []
        for _, _, instruction in ex:
            r = rng.random()
            prompts.append("" if r < 0.05 or 0.10 <= r < 0.15 else instruction)
            keep.append(0.0 if 0.05 <= r < 0.15 else 1.0)
        src = src * torch.tensor(keep)[:, None, None, None]
        states, pooled = text(prompts)
        zt, eps, t = noise(z)
        pred = unet(torch.cat([zt, src], 1), t, states, added_cond_kwargs={
            "text_embeds": pooled, "time_ids": time_ids(len(z))}).sample
        return noise.loss(pred, eps, t, object_weights([a for a, _, _ in ex], 3.0))

    run_loop("xl-instruct", list(unet.parameters()), steps, 5e-4, loss_fn, save=save,
             save_every=save_every, start=start)


def export_base(work: Path, out: Path) -> Path:
    """The base stage as an SDXL pipeline folder in the Hub layout (fp16 safetensors, the
    toy VAE with its own scaling factor), as `stabilityai/stable-diffusion-xl-base-1.0` lays
    out its repo; returns the folder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from studio.backend.models.tiny import save_pipeline_index

    src, base = work / "base", out / "stable-diffusion"
    half = {"safe_serialization": True}
    UNet2DConditionModel.from_pretrained(src / "unet").half().save_pretrained(
        base / "unet", **half)
    AutoencoderKL.from_pretrained(trained(TOY_WORK, "vae"), dtype=torch.float32).half()\
        .save_pretrained(base / "vae", **half)
    CLIPTextModel.from_pretrained(src / "text_encoder").half().save_pretrained(
        base / "text_encoder", **half)
    CLIPTextModelWithProjection.from_pretrained(src / "text_encoder_2").half()\
        .save_pretrained(base / "text_encoder_2", **half)
    for name in ("tokenizer", "tokenizer_2"):
        shutil.copytree(src / "tokenizer", base / name, dirs_exist_ok=True)
    (base / "scheduler").mkdir(parents=True, exist_ok=True)
    (base / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_config()))
    save_pipeline_index(base, "StableDiffusionXLPipeline", {
        "unet": ("diffusers", "UNet2DConditionModel"), "vae": ("diffusers", "AutoencoderKL"),
        "text_encoder": ("transformers", "CLIPTextModel"),
        "text_encoder_2": ("transformers", "CLIPTextModelWithProjection"),
        "tokenizer": ("transformers", "CLIPTokenizer"),
        "tokenizer_2": ("transformers", "CLIPTokenizer"),
        "scheduler": ("diffusers", "EulerDiscreteScheduler"),
    })
    return base


def export(work: Path, out: Path) -> Path:
    """Every stage trained in `work` as the `toy-xl` set's folders in the Hub layout (fp16
    safetensors), named as `models.modelsets.REPOS` names a local set's repos: the base,
    `controlnet-scribble` (it serves the canny type too), the inpainting and InstructPix2Pix
    UNets. The previews, the SAM and the detector are the toy set's (same VAE, same scenes)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    export_base(work, out)
    half = {"safe_serialization": True}
    if (work / "controlnet" / "controlnet").is_dir():
        ControlNetModel.from_pretrained(work / "controlnet" / "controlnet").half()\
            .save_pretrained(out / "controlnet-scribble", **half)
    for stage, folder in (("inpaint", "stable-diffusion-inpainting"),
                          ("instruct", "instruct-pix2pix")):
        if (work / stage / "unet").is_dir():
            UNet2DConditionModel.from_pretrained(work / stage / "unet").half()\
                .save_pretrained(out / folder / "unet", **half)
    (out / "README.md").write_text(
        "The toy SDXL world (`--models toy-xl`), exported by `python -m toyworld.train_xl "
        "export` from the fp16 checkpoints in checkpoints/toy-xl; see the main README.\n")
    return out


def evaluate_base(work: Path, out: Path, n: int = 48) -> str:
    """Export the base and run the toy world's text-to-image check on it through the studio
    (SDXL family, the real loading path): colour and shape of "a <colour> <shape>"."""
    from studio.backend.models.modelsets import ModelSet
    from studio.backend.service import Studio
    from studio.settings import Settings

    from .evaluate import eval_txt2img

    base = export_base(work, out)
    ms = ModelSet(name="toy-xl-base", family="sdxl", repos={"base": str(base)},
                  offline_models=True, native_size=SIZE, description="toy SDXL base stage")
    settings = Settings(models=str(base), offline=True, outputs_dir=out / "outputs",
                        previews=False, cache_dir=out / "cache")
    studio = Studio(settings, model_set=ms)
    return eval_txt2img(studio, n).line()


STAGES = {
    "base": (train_base, 4500),
    "controlnet": (train_controlnet, 1200),
    "inpaint": (train_inpaint, 1200),
    "instruct": (train_instruct, 2000),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=[*STAGES, "evaluate-base", "export"])
    p.add_argument("--out", type=Path, default=None,
                   help="export: the set's folder (default assets/toy-xl); evaluate-base: "
                   "where the exported pipeline goes (default build/toy-xl-export)")
    p.add_argument("--steps", type=int, help="training steps (default: the stage's own)")
    p.add_argument("--work", type=Path, default=WORK, help="fp32 checkpoints folder")
    p.add_argument("--resume", action="store_true",
                   help="continue from the stage's last save (its progress.json)")
    p.add_argument("--save-every", type=int, default=250, help="steps between saves")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stage == "evaluate-base":
        print(evaluate_base(args.work, args.out or Path("build/toy-xl-export")))
        return
    if args.stage == "export":
        print("exported to", export(args.work, args.out or ASSETS_XL))
        return
    fn, default_steps = STAGES[args.stage]
    fn(args.work, args.steps or default_steps, resume=args.resume,
       save_every=args.save_every)


if __name__ == "__main__":
    main()
