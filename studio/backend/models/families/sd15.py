"""Stable Diffusion 1.5: one CLIP ViT-L/14 text encoder, a 4-channel UNet at 512 px, and the
widest set of task models (ControlNet 1.1, GLIGEN, InstructPix2Pix, IP-Adapter, LCM-LoRA).

The toy and tiny built-in sets are this family at miniature scale (`models/builtin.py`).
"""

from __future__ import annotations

from ..modelsets import ModelSet
from .base import Component, Defaults, Family, Method

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
        "instruct": Method("InstructPix2Pix"),
        "remix": Method("IP-Adapter (`ip-adapter_sd15`, ViT-H)"),
        "seedselect": Method("SeedSelect (CLIP ViT-L/14 image tower)"),
        "concept_train": Method("textual inversion, LoRA, SeedSelect"),
    },
    model_set=MODEL_SET,
    defaults=Defaults(steps=25, guidance=7.5, sampler="Euler a",
                      ays="StableDiffusionTimesteps"),
    pipeline_kwargs={"safety_checker": None, "feature_extractor": None,
                     "requires_safety_checker": False},
    single_file="diffusers.StableDiffusionPipeline",
)
