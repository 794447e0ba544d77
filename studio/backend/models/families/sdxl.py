"""Stable Diffusion XL: two CLIP text encoders (ViT-L and OpenCLIP ViT-bigG with a
projection), size/crop micro-conditioning (`text_time`), a 4-channel UNet at 1024 px.

Diffusers' SDXL pipelines encode the prompt with both encoders and add the micro-conditioning
themselves, so every tab that has an SDXL pipeline runs on the shared components as SD1.5's
do. The tiny random set is `tiny-xl` (`models/tiny_xl.py`).
"""

from __future__ import annotations

from ..modelsets import ModelSet
from .base import (
    Component,
    Defaults,
    Family,
    Method,
    Unsupported,
    clip_text_config,
    sd_vae_config,
)

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
        # one model for every control type (a unit's `model: "union"`)
        "controlnet_union": "xinsir/controlnet-union-sdxl-1.0",
        "lcm_lora": "latent-consistency/lcm-lora-sdxl",
        # TAESDXL: SDXL's latents decoded for live previews
        "taesd": "madebyollin/taesdxl",
        # SDXL's VAE fine-tuned to decode in fp16 (the original overflows to NaN there)
        "vae_fp16": "madebyollin/sdxl-vae-fp16-fix",
        # IP-Adapter for SDXL with SD1.5's image encoder, OpenCLIP ViT-H/14 (plain: one pooled
        # image embedding, so text diffs work as on SD1.5)
        "ip_adapter": "h94/IP-Adapter",
        "ip_text": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        # SeedSelect's judge of likeness, as on SD1.5 (any CLIP image tower serves)
        "image_encoder": "openai/clip-vit-large-patch14",
    },
    native_size=1024,
    description="Stable Diffusion XL (downloaded from the Hugging Face Hub on first use)",
)

# stable-diffusion-xl-base-1.0's sampler: Euler, SD's noise schedule, leading spacing
SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "interpolation_type": "linear", "sample_max_value": 1.0,
    "steps_offset": 1, "timestep_spacing": "leading", "use_karras_sigmas": False,
    "clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True,
}
# stable-diffusion-xl-base-1.0's small files
CONFIGS = {
    "model_index.json": {
        "_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": True,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    },
    "scheduler/scheduler_config.json": SCHEDULER,
    "unet/config.json": {
        "_class_name": "UNet2DConditionModel", "act_fn": "silu",
        "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
        "block_out_channels": [320, 640, 1280], "center_input_sample": False,
        "cross_attention_dim": 2048,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
        "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
        "norm_num_groups": 32, "out_channels": 4, "sample_size": 128,
        "projection_class_embeddings_input_dim": 2816,
        "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": True,
    },
    "vae/config.json": sd_vae_config(0.13025, 1024, force_upcast=True),
    # CLIP ViT-L/14 (as SD1.5's) and OpenCLIP ViT-bigG/14 with its projection
    "text_encoder/config.json": clip_text_config(768, 12, 12, "quick_gelu"),
    "text_encoder_2/config.json": clip_text_config(1280, 32, 20, "gelu", with_projection=True),
}

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
        "controlnet_union": Component("diffusers.ControlNetUnionModel"),
    },
    shared={"vae": "vae", "text_encoder": "text_encoder", "text_encoder_2": "text_encoder_2",
            "tokenizer": "tokenizer", "tokenizer_2": "tokenizer_2"},
    pipelines={
        "txt2img": "diffusers.StableDiffusionXLPipeline",
        "img2img": "diffusers.StableDiffusionXLImg2ImgPipeline",  # hires fix's second pass
        "control": "diffusers.StableDiffusionXLControlNetPipeline",
        "control_img2img": "diffusers.StableDiffusionXLControlNetImg2ImgPipeline",
        "control_union": "diffusers.StableDiffusionXLControlNetUnionPipeline",
        "control_union_img2img": "diffusers.StableDiffusionXLControlNetUnionImg2ImgPipeline",
        "inpaint": "diffusers.StableDiffusionXLInpaintPipeline",
        "instruct": "diffusers.StableDiffusionXLInstructPix2PixPipeline",
    },
    tasks={
        "txt2img": Method("StableDiffusionXLPipeline (both text encoders, size/crop "
                          "conditioning); Attend-and-Excite on the UNet"),
        "prompt_edit": Method("prompt-to-prompt on the UNet's cross-attention"),
        "control": Method("SDXL ControlNets (scribble, openpose, depth, canny) or ControlNet "
                          "Union, stackable; img2img"),
        "layout": Unsupported("GLIGEN has no SDXL weights; use an SD1.5 model for box "
                              "layouts"),
        "inpaint": Method("SDXL inpainting UNet (9 ch), or blend on any checkpoint"),
        "outpaint": Method("SDXL inpainting UNet on the extended canvas, or blend"),
        "instruct": Method("InstructPix2Pix (`sdxl-instructpix2pix-768`)"),
        "remix": Method("IP-Adapter (`ip-adapter_sdxl_vit-h`, ViT-H)"),
        "seedselect": Method("SeedSelect (CLIP ViT-L/14 image tower)"),
        "concept_train": Method("textual inversion (clip_l + clip_g), LoRA, SeedSelect"),
        "upscale": Method("upscaler models (ESRGAN family, spandrel) or Lanczos, on pixels; "
                          "hires fix: img2img at the enlarged size"),
    },
    model_set=MODEL_SET,
    defaults=Defaults(steps=30, guidance=5.0, sampler="Euler a",
                      ays="StableDiffusionXLTimesteps"),
    # no invisible watermark (it needs a package the studio does not ship, and A1111 adds none)
    pipeline_kwargs={"add_watermarker": False},
    single_file="diffusers.StableDiffusionXLPipeline",
    embedding_parts=(("clip_l", "tokenizer", "text_encoder"),
                     ("clip_g", "tokenizer_2", "text_encoder_2")),
    configs=CONFIGS,
    # OpenCLIP's tokenizer pads with "!" (id 0), CLIP's with the end token
    tokenizers={"tokenizer": "<|endoftext|>", "tokenizer_2": "!"},
    ip_adapter_weight="sdxl_models/ip-adapter_sdxl_vit-h.safetensors",
    text_time=True,
    # xinsir's ControlNet Union: 0 openpose, 1 depth, 2 thick lines (scribble, HED), 3 thin
    # lines (canny, lineart), 4 normal, 5 segmentation
    union_modes={"openpose": 0, "depth": 1, "scribble": 2, "canny": 3},
)
