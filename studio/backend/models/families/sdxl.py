"""Stable Diffusion XL: two CLIP text encoders (ViT-L and OpenCLIP ViT-bigG with a
projection), size/crop micro-conditioning (`text_time`), a 4-channel UNet at 1024 px.

Diffusers' SDXL pipelines encode the prompt with both encoders and add the micro-conditioning
themselves, so every tab that has an SDXL pipeline runs on the shared components as SD1.5's
do. The tiny random set is `tiny-xl` (`models/tiny_xl.py`).
"""

from __future__ import annotations

from ..modelsets import ModelSet
from .base import Component, Defaults, Family, Method, Unsupported

MODEL_SET = ModelSet(
    name="sdxl",
    family="sdxl",
    repos={
        "base": "stabilityai/stable-diffusion-xl-base-1.0",
        "inpaint": "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
        "instruct": "diffusers/sdxl-instructpix2pix-768",
        "controlnet:scribble": "xinsir/controlnet-scribble-sdxl-1.0",
        "controlnet:openpose": "thibaud/controlnet-openpose-sdxl-1.0",
        "controlnet:depth": "diffusers/controlnet-depth-sdxl-1.0",
        "controlnet:canny": "diffusers/controlnet-canny-sdxl-1.0",
        "lcm_lora": "latent-consistency/lcm-lora-sdxl",
        # TAESDXL: SDXL's latents decoded for live previews
        "taesd": "madebyollin/taesdxl",
        # SDXL's VAE fine-tuned to decode in fp16 (the original overflows to NaN there)
        "vae_fp16": "madebyollin/sdxl-vae-fp16-fix",
    },
    native_size=1024,
    description="Stable Diffusion XL (downloaded from the Hugging Face Hub on first use)",
)

_NOT_YET = "not wired for SDXL yet (the model-families issue lists it)"

FAMILY = Family(
    name="sdxl",
    label="SDXL",
    components={
        "tokenizer": Component("transformers.CLIPTokenizer", "tokenizer", kind="tokenizer"),
        "tokenizer_2": Component("transformers.CLIPTokenizer", "tokenizer_2",
                                 kind="tokenizer"),
        "scheduler": Component("diffusers.EulerDiscreteScheduler", "scheduler", kind="config"),
        "text_encoder": Component("transformers.CLIPTextModel", "text_encoder"),
        "text_encoder_2": Component("transformers.CLIPTextModelWithProjection",
                                    "text_encoder_2"),
        "vae": Component("diffusers.AutoencoderKL", "vae"),
        "unet": Component("diffusers.UNet2DConditionModel", "unet"),
        "controlnet": Component("diffusers.ControlNetModel"),
    },
    shared={"vae": "vae", "text_encoder": "text_encoder", "text_encoder_2": "text_encoder_2",
            "tokenizer": "tokenizer", "tokenizer_2": "tokenizer_2"},
    pipelines={
        "txt2img": "diffusers.StableDiffusionXLPipeline",
        "control": "diffusers.StableDiffusionXLControlNetPipeline",
        "control_img2img": "diffusers.StableDiffusionXLControlNetImg2ImgPipeline",
        "inpaint": "diffusers.StableDiffusionXLInpaintPipeline",
        "instruct": "diffusers.StableDiffusionXLInstructPix2PixPipeline",
    },
    tasks={
        "txt2img": Method("StableDiffusionXLPipeline (both text encoders, size/crop "
                          "conditioning); Attend-and-Excite on the UNet"),
        "prompt_edit": Method("prompt-to-prompt on the UNet's cross-attention"),
        "control": Method("SDXL ControlNets (scribble, openpose, depth, canny), stackable; "
                          "img2img"),
        "layout": Unsupported("GLIGEN has no SDXL weights; use an SD1.5 model for box "
                              "layouts"),
        "inpaint": Method("SDXL inpainting UNet (9 ch), or blend on any checkpoint"),
        "instruct": Method("InstructPix2Pix (`sdxl-instructpix2pix-768`)"),
        "remix": Unsupported(f"IP-Adapter is {_NOT_YET}"),
        "seedselect": Unsupported(f"SeedSelect is {_NOT_YET}"),
        "concept_train": Unsupported(f"concept training (two text encoders) is {_NOT_YET}"),
    },
    model_set=MODEL_SET,
    defaults=Defaults(steps=30, guidance=5.0, sampler="Euler a",
                      ays="StableDiffusionXLTimesteps"),
    # no invisible watermark (it needs a package the studio does not ship, and A1111 adds none)
    pipeline_kwargs={"add_watermarker": False},
    single_file="diffusers.StableDiffusionXLPipeline",
    embedding_parts=(("clip_l", "tokenizer", "text_encoder"),
                     ("clip_g", "tokenizer_2", "text_encoder_2")),
)
