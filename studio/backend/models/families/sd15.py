"""Stable Diffusion 1.5: one CLIP ViT-L/14 text encoder, a 4-channel UNet at 512 px, and the
widest set of task models (ControlNet 1.1, GLIGEN, InstructPix2Pix, IP-Adapter, LCM-LoRA).

The toy and tiny built-in sets are this family at miniature scale (`models/builtin.py`).
"""

from __future__ import annotations

from ..modelsets import ModelSet
from .base import Component, Defaults, Family, Method, clip_text_config, sd_vae_config

MODEL_SET = ModelSet(
    name="sd15",
    family="sd15",
    repos={
        "base": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "inpaint": "stable-diffusion-v1-5/stable-diffusion-inpainting",
        "instruct": "timbrooks/instruct-pix2pix",
        "gligen": "masterful/gligen-1-4-generation-text-box",
        "gligen_inpaint": "masterful/gligen-1-4-inpainting-text-box",
        "controlnet:scribble": "lllyasviel/control_v11p_sd15_scribble",
        "controlnet:openpose": "lllyasviel/control_v11p_sd15_openpose",
        "controlnet:depth": "lllyasviel/control_v11f1p_sd15_depth",
        "controlnet:canny": "lllyasviel/control_v11p_sd15_canny",
        "lcm_lora": "latent-consistency/lcm-lora-sdv1-5",
        # SD1.5's text encoder is CLIP ViT-L/14; its image tower embeds images in that space.
        "image_encoder": "openai/clip-vit-large-patch14",
        # TAESD: a distilled decoder of SD1.5's latents (~5 MB), for live previews only
        "taesd": "madebyollin/taesd",
        # IP-Adapter for SD1.5 (plain `ip-adapter_sd15`: one pooled image embedding, so text
        # diffs work); its image encoder is OpenCLIP ViT-H/14, whose text tower is here
        "ip_adapter": "h94/IP-Adapter",
        "ip_text": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
    },
    description="Stable Diffusion 1.5 family (downloaded from the Hugging Face Hub on first use)",
)

# stable-diffusion-v1-5's small files (no safety checker: the studio loads none)
CONFIGS = {
    "model_index.json": {
        "_class_name": "StableDiffusionPipeline",
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": [None, None], "feature_extractor": [None, None],
        "requires_safety_checker": False,
    },
    "scheduler/scheduler_config.json": {
        "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
        "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "clip_sample": False, "prediction_type": "epsilon",
    },
    "unet/config.json": {
        "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False,
        "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
        "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
        "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    },
    "vae/config.json": sd_vae_config(0.18215, 512),
    "text_encoder/config.json": clip_text_config(768, 12, 12, "quick_gelu"),
}

FAMILY = Family(
    name="sd15",
    label="SD1.5",
    components={
        "tokenizer": Component("transformers.CLIPTokenizer", "tokenizer", kind="tokenizer"),
        "scheduler": Component("diffusers.DDIMScheduler", "scheduler", kind="config"),
        "text_encoder": Component("transformers.CLIPTextModel", "text_encoder"),
        "vae": Component("diffusers.AutoencoderKL", "vae"),
        # every UNet role (base, inpainting, InstructPix2Pix, GLIGEN) is a UNet2DConditionModel
        "unet": Component("diffusers.UNet2DConditionModel", "unet"),
        "controlnet": Component("diffusers.ControlNetModel"),
    },
    shared={"vae": "vae", "text_encoder": "text_encoder", "tokenizer": "tokenizer"},
    pipelines={
        "txt2img": "diffusers.StableDiffusionPipeline",
        "img2img": "diffusers.StableDiffusionImg2ImgPipeline",  # hires fix's second pass
        "control": "diffusers.StableDiffusionControlNetPipeline",
        "control_img2img": "diffusers.StableDiffusionControlNetImg2ImgPipeline",
        "inpaint": "diffusers.StableDiffusionInpaintPipeline",
        "instruct": "diffusers.StableDiffusionInstructPix2PixPipeline",
        "gligen": "diffusers.StableDiffusionGLIGENPipeline",
    },
    tasks={
        "txt2img": Method("StableDiffusionPipeline; Attend-and-Excite on the UNet"),
        "prompt_edit": Method("prompt-to-prompt on the UNet's cross-attention"),
        "control": Method("ControlNet 1.1 (scribble, openpose, depth, canny), stackable; "
                          "img2img"),
        "layout": Method("GLIGEN (generation and inside boxes)"),
        "inpaint": Method("inpainting UNet (9 ch), or blend on any checkpoint"),
        "outpaint": Method("inpainting UNet on the extended canvas, or blend"),
        "instruct": Method("InstructPix2Pix"),
        "remix": Method("IP-Adapter (`ip-adapter_sd15`, ViT-H)"),
        "seedselect": Method("SeedSelect (CLIP ViT-L/14 image tower)"),
        "concept_train": Method("textual inversion, LoRA, SeedSelect"),
        "upscale": Method("upscaler models (ESRGAN family, spandrel) or Lanczos, on pixels; "
                          "hires fix: img2img at the enlarged size"),
    },
    model_set=MODEL_SET,
    defaults=Defaults(steps=25, guidance=7.5, sampler="Euler a",
                      ays="StableDiffusionTimesteps"),
    pipeline_kwargs={"safety_checker": None, "feature_extractor": None,
                     "requires_safety_checker": False},
    single_file="diffusers.StableDiffusionPipeline",
    configs=CONFIGS,
    tokenizers={"tokenizer": "<|endoftext|>"},
    ip_adapter_weight="models/ip-adapter_sd15.safetensors",
)
