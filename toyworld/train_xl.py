"""Train the toy SDXL world: `python -m toyworld.train_xl STAGE [--steps N] [--resume]`.

SDXL's architecture at toy scale, on the toy scenes (`toyworld.scenes`), for `--models
toy-xl`:

- ``base``: two CLIP text encoders (a plain one, 64 wide, and one with a projection, 96 wide,
  as SDXL's CLIP ViT-L and OpenCLIP bigG) and an SDXL UNet: no attention at the highest
  resolution, linear projections, cross-attention over both encoders' penultimate hidden
  states side by side, and the `text_time` embedding of the six size/crop numbers plus the
  second encoder's pooled, projected embedding. Dropped captions (10%) are zero embeddings,
  as SDXL's pipeline gives an empty negative prompt (`force_zeros_for_empty_prompt`).

The VAE and the tokenizer are the toy world's (SDXL's VAE is SD's architecture with its own
scaling factor; the toy VAE serves both worlds), read from `build/toy` or the shipped
`assets/toy`. Later stages (a scribble/canny ControlNet, the inpainting and InstructPix2Pix
UNets, the export to `assets/toy-xl`) follow in later sessions.

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
    drop,
    object_weights,
    run_loop,
    scenes,
    seed_all,
    text_config,
    trained,
)

log = logging.getLogger("toyworld.train_xl")

# committed: a stage longer than a working session resumes from here in the next one
WORK = Path("checkpoints/toy-xl")
TOY_WORK = Path("build/toy")  # the toy world's stages (VAE, tokenizer), else assets/toy
TEXT_DIM, TEXT_DIM_2 = 64, 96
TIME_DIM = 8  # addition_time_embed_dim
# SDXL's micro-conditioning at the toy size: original size, crop top-left, target size
TIME_IDS = (SIZE, SIZE, 0, 0, SIZE, SIZE)
PROGRESS = "progress.json"


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


def _progress(folder: Path) -> int:
    path = folder / PROGRESS
    return int(json.loads(path.read_text())["step"]) if path.is_file() else 0


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
    start = _progress(out) if resume else 0
    seed_all(20 + start)  # a resumed run draws fresh noise; its scenes follow the step
    if start:
        unet = UNet2DConditionModel.from_pretrained(out / "unet").train()
        te = CLIPTextModel.from_pretrained(out / "text_encoder").train()
        te2 = CLIPTextModelWithProjection.from_pretrained(out / "text_encoder_2").train()
        log.info("resuming base at step %d of %d", start, steps)
    else:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(trained(TOY_WORK, "tokenizer"), out / "tokenizer", dirs_exist_ok=True)
        vocab = len(CLIPTokenizer.from_pretrained(out / "tokenizer"))
        te = CLIPTextModel(CLIPTextConfig(**text_config(vocab, TEXT_DIM))).train()
        te2 = CLIPTextModelWithProjection(
            CLIPTextConfig(**text_config(vocab, TEXT_DIM_2))).train()
        unet = UNet2DConditionModel(**unet_config()).train()
    tok = CLIPTokenizer.from_pretrained(out / "tokenizer")
    frozen = Frozen(TOY_WORK, text=False)
    noise = Noise()
    rng = random.Random(20 + start)
    reached = {"step": start}

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

    def save() -> None:
        unet.save_pretrained(out / "unet")
        te.save_pretrained(out / "text_encoder")
        te2.save_pretrained(out / "text_encoder_2")
        (out / PROGRESS).write_text(json.dumps({"step": reached["step"], "of": steps}))
        log.info("base saved at step %d", reached["step"])

    params = [*unet.parameters(), *te.parameters(), *te2.parameters()]
    run_loop("xl-base", params, steps, 1e-3, loss_fn, save=save, save_every=save_every,
             start=start)


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


STAGES = {"base": (train_base, 4500)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=[*STAGES, "evaluate-base"])
    p.add_argument("--out", type=Path, default=Path("build/toy-xl-export"),
                   help="evaluate-base: where the exported pipeline goes")
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
        print(evaluate_base(args.work, args.out))
        return
    fn, default_steps = STAGES[args.stage]
    fn(args.work, args.steps or default_steps, resume=args.resume,
       save_every=args.save_every)


if __name__ == "__main__":
    main()
