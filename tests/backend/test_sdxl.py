"""SDXL through the family seam, on the random tiny SDXL set (`tiny-xl`) and on the real SDXL
repo ids in an offline Hub cache: every tab the capability matrix lists for SDXL runs and
behaves (seeds reproduce, a control map matters, unmasked pixels survive), the others are
refused with their reason before anything loads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from studio.backend.common import Cancelled, CancelToken
from studio.backend.models.families import get_family
from studio.backend.models.families.sdxl import MODEL_SET as SDXL
from studio.backend.models.registry import ModelRegistry
from studio.backend.requests import RequestError
from tests.support.hubcache import hub_cache_of

BASE = {"prompt": "a red circle and a blue square", "seed": 3, "steps": 3, "width": 64,
        "height": 64}


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def scene() -> Image.Image:
    img = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(img).ellipse((16, 16, 48, 48), fill="red")
    return img


def sketch() -> Image.Image:
    img = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(img).rectangle((12, 12, 52, 52), outline="white", width=3)
    return img


def box_mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 32, 40), fill=255)
    return mask


@pytest.fixture(scope="module")
def xl(tiny_settings, tiny_xl_model_set, tmp_path_factory):
    from studio.backend.service import Studio

    tmp = tmp_path_factory.mktemp("xl")
    settings = replace(tiny_settings, models="tiny-xl", outputs_dir=tmp / "out",
                       concepts_dir=tmp / "concepts")
    return Studio(settings, model_set=tiny_xl_model_set)


def test_the_tiny_xl_set_is_sdxl_with_two_text_encoders(xl):
    registry = xl.registry
    assert registry.family.name == "sdxl" and xl.native_size == 64
    pipe = registry.family.pipeline(registry, "txt2img")
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert pipe.text_encoder_2 is registry.component("text_encoder_2")
    assert pipe.unet.config.addition_embed_type == "text_time"
    assert pipe.unet.config.cross_attention_dim == (
        pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size)


def test_txt2img_seed_reproduces_and_the_prompt_matters(xl):
    first, again = xl.txt2img(BASE), xl.txt2img(BASE)
    assert np.array_equal(px(first.image), px(again.image))
    other = xl.txt2img({**BASE, "prompt": "a green triangle"})
    assert not np.array_equal(px(first.image), px(other.image))
    assert first.info["model"] == "tiny-xl"


def test_txt2img_draws_what_diffusers_own_sdxl_pipeline_draws(xl, tiny_xl_model_set):
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline

    ours = px(xl.txt2img(BASE).image)
    raw = StableDiffusionXLPipeline.from_pretrained(
        tiny_xl_model_set.base, dtype=torch.float32, local_files_only=True,
        add_watermarker=False)
    raw.scheduler = EulerAncestralDiscreteScheduler.from_config(raw.scheduler.config)
    raw.set_progress_bar_config(disable=True)
    theirs = raw(prompt=BASE["prompt"], num_inference_steps=3, guidance_scale=7.5, width=64,
                 height=64, generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert np.array_equal(ours, px(theirs))


def test_hires_fix_runs_sdxls_img2img_on_the_shared_components(xl):
    result = xl.txt2img({**BASE, "hires_scale": 2, "hires_steps": 2})  # latent
    assert result.image.size == (128, 128)
    pipe = xl.registry.family.pipeline(xl.registry, "img2img")
    assert type(pipe).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert pipe.text_encoder_2 is xl.registry.component("text_encoder_2")


def test_a_control_map_steers_and_weight_zero_is_plain_generation(xl):
    plain = px(xl.txt2img(BASE).image)
    unit = {"type": "scribble", "image": sketch()}
    steered = xl.control({**BASE, "units": [unit]})
    assert np.abs(px(steered.image) - plain).mean() > 1
    other = xl.control({**BASE, "units": [{**unit, "image": scene()}]})
    assert not np.array_equal(px(other.image), px(steered.image))
    zero = xl.control({**BASE, "units": [{**unit, "weight": 0}]})
    assert np.abs(px(zero.image) - plain).max() <= 2
    stacked = xl.control({**BASE, "units": [unit, {"type": "depth", "image": scene()}]})
    assert not np.array_equal(px(stacked.image), px(steered.image))
    img2img = xl.control({**BASE, "units": [unit], "init_image": scene(), "strength": 0.5})
    assert not np.array_equal(px(img2img.image), px(steered.image))


def test_controlnet_union_steers_by_map_and_mode_and_stacks(xl):
    """ControlNet Union: one model, told each unit's type by its mode. The map and the mode
    both change the image, weight 0 is plain generation, units stack (the same model once
    per unit), img2img works, and a mix with per-type ControlNets is refused by name."""
    plain = px(xl.txt2img(BASE).image)
    unit = {"type": "scribble", "image": sketch(), "model": "union"}
    steered = px(xl.control({**BASE, "units": [unit]}).image)
    assert np.abs(steered - plain).mean() > 1
    assert type(xl.registry.family.pipeline(
        xl.registry, "control_union", controlnets=("controlnet_union",))).__name__ == \
        "StableDiffusionXLControlNetUnionPipeline"
    other_map = px(xl.control({**BASE, "units": [{**unit, "image": scene()}]}).image)
    other_mode = px(xl.control({**BASE, "units": [{**unit, "type": "canny"}]}).image)
    assert not np.array_equal(other_map, steered) and not np.array_equal(other_mode, steered)
    zero = px(xl.control({**BASE, "units": [{**unit, "weight": 0}]}).image)
    assert np.abs(zero - plain).max() <= 2
    stacked = xl.control({**BASE, "units": [unit, {**unit, "type": "depth",
                                                    "image": scene()}]})
    assert not np.array_equal(px(stacked.image), steered)
    assert stacked.info["request"]["units"][1]["model"] == "union"
    img2img = xl.control({**BASE, "units": [unit], "init_image": scene(), "strength": 0.5})
    assert not np.array_equal(px(img2img.image), steered)
    with pytest.raises(RequestError, match="cannot steer one image together"):
        xl.control({**BASE, "units": [unit, {"type": "depth", "image": scene()}]})
    with pytest.raises(RequestError, match="unknown model 'unionx'"):
        xl.control({**BASE, "units": [{**unit, "model": "unionx"}]})
    assert xl.registry.stats[f"load:controlnet_union@{xl.model_set.get('controlnet_union')}"] \
        == 1


def test_schedules_clip_skip_and_control_modes_work_on_sdxl(xl):
    plain = px(xl.txt2img({**BASE, "scheduler": "Euler"}).image)
    for change in ({"schedule": "karras"}, {"schedule": "ays"}, {"clip_skip": 2}):
        changed = px(xl.txt2img({**BASE, "scheduler": "Euler", **change}).image)
        assert np.abs(changed - plain).mean() > 0.5, change
    unit = {"type": "scribble", "image": sketch()}
    balanced = px(xl.control({**BASE, "units": [unit]}).image)
    for mode in ("prompt", "control"):
        moded = px(xl.control({**BASE, "units": [{**unit, "control_mode": mode}]}).image)
        assert np.abs(moded - balanced).mean() > 0.5, mode


@pytest.mark.parametrize(("mode", "channels"), [("inpaint", 9), ("blend", 4)])
def test_inpainting_keeps_every_unmasked_pixel(xl, mode, channels):
    image, mask = scene(), box_mask()
    out = xl.inpaint({**BASE, "image": image, "mask": mask, "mode": mode, "mask_blur": 0})
    changed = (px(out.image) != px(image)).any(-1)
    inside = np.asarray(mask) > 127
    assert not changed[~inside].any() and changed[inside].mean() > 0.9
    from studio.backend.tasks.inpaint import inpaint_pipeline

    pipe = inpaint_pipeline(xl.registry, mode)
    assert type(pipe).__name__ == "StableDiffusionXLInpaintPipeline"
    assert pipe.unet.config.in_channels == channels


def test_outpainting_extends_and_keeps_the_original(xl):
    image = scene()
    out = xl.outpaint({**BASE, "image": image, "bottom": 32})
    assert out.image.size == (64, 96) and (px(out.image)[:64] == px(image)).all()
    assert out.info["mode_run"] == "inpaint"


def test_instruct_follows_the_image_reports_progress_and_stops(xl):
    steps: list[tuple[int, int]] = []
    req = {**BASE, "prompt": "make it blue", "image": scene(), "max_side": 64}
    out = xl.run("instruct", req, progress=lambda s, t: steps.append((s, t)))
    assert steps[-1] == (3, 3)  # the older per-step callback of SDXL's pipeline reports too
    other = xl.run("instruct", {**req, "image": sketch()})
    assert not np.array_equal(px(out.image), px(other.image))
    token = CancelToken()
    with pytest.raises(Cancelled):
        xl.run("instruct", req, progress=lambda s, t: token.cancel(), cancel=token)


def test_prompt_to_prompt_and_attend_and_excite_run_on_the_sdxl_unet(xl):
    plain = px(xl.txt2img(BASE).image)
    unet = xl.registry.component("unet")
    before = dict(unet.attn_processors)
    edit = xl.run("prompt_edit", {**BASE, "edited_prompt": "a red circle and a green square"})
    assert not np.array_equal(px(edit.image), plain)
    excited = xl.txt2img({**BASE, "attend_excite": True})
    assert not np.array_equal(px(excited.image), plain)
    assert np.array_equal(px(xl.txt2img({**BASE, "attend_excite": True}).image),
                          px(excited.image))
    after = unet.attn_processors
    assert before.keys() == after.keys() and all(after[k] is v for k, v in before.items())


def test_remix_and_reference_pictures_use_sdxls_ip_adapter(xl):
    """Remix on SDXL: the picture is the prompt (another picture, another image; the same,
    the same image), text diffs move it, and Control's reference pictures take the same
    adapter; the UNet's own processors are back afterwards."""
    unet = xl.registry.component("unet")
    before = dict(unet.attn_processors)
    remix = {**BASE, "prompt": "", "images": [scene()]}
    first = xl.run("remix", remix)
    assert np.array_equal(px(xl.run("remix", remix).image), px(first.image))
    assert not np.array_equal(px(xl.run("remix", {**remix, "images": [sketch()]}).image),
                              px(first.image))
    moved = xl.run("remix", {**remix, "text_from": "a red circle", "text_to": "a blue circle",
                             "text_amount": 1.0})
    assert not np.array_equal(px(moved.image), px(first.image))
    assert xl.registry.component("ip_adapter").source.endswith("ip-adapter")
    unit = {"type": "scribble", "image": sketch()}
    plain = xl.control({**BASE, "units": [unit]})
    referenced = xl.control({**BASE, "units": [unit], "reference_images": [scene()]})
    assert not np.array_equal(px(referenced.image), px(plain.image))
    after = unet.attn_processors
    assert before.keys() == after.keys() and all(after[k] is v for k, v in before.items())


def test_seedselect_optimises_the_starting_noise_through_the_sdxl_unet(xl):
    """SeedSelect calls the SDXL UNet itself (both encoders' states, the pooled prompt and the
    size/crop numbers, as the pipeline gives them): the loss drops, a seed reproduces, and
    the optimised noise draws through the SDXL pipeline."""
    req = {**BASE, "prompt": "a red circle", "images": [scene(), sketch(), scene()], "steps": 3,
           "sample_steps": 2, "guidance_scale": 2.0, "bootstrap": 0, "learning_rate": 0.05}
    run = xl.seedselect(req)
    assert run.info["loss_final"]["total"] < run.info["loss_initial"]["total"]
    assert np.array_equal(px(xl.seedselect(req).image), px(run.image))
    assert xl.registry.key("image_encoder").startswith("image_encoder@")
    fewer = xl.seedselect({**req, "steps": 1})  # less optimised: another noise, image
    assert not np.array_equal(px(fewer.image), px(run.image))


def test_fast_mode_loads_the_sdxl_lcm_lora(xl):
    plain = px(xl.txt2img(BASE).image)
    fast = xl.txt2img({**BASE, "fast": True})
    assert fast.info["guidance_run"] == 1.0
    assert np.abs(px(fast.image) - plain).mean() > 1


@pytest.mark.parametrize(("task", "data", "reason"), [
    ("layout", {"boxes": [{"phrase": "a cat", "box": [0.1, 0.1, 0.5, 0.5]}]},
     "layout is not available for SDXL models: GLIGEN has no SDXL weights"),
    ("control", {"units": [{"type": "scribble", "image": sketch(), "model": "union"},
                           {"type": "canny", "image": sketch()}]},
     "ControlNet Union and per-type ControlNets cannot steer one image together"),
])
def test_what_sdxl_cannot_do_is_refused_before_anything_loads(
        tiny_settings, tiny_xl_model_set, tmp_path, task, data, reason):
    from studio.backend.service import Studio

    studio = Studio(replace(tiny_settings, outputs_dir=tmp_path / "out"),
                    model_set=tiny_xl_model_set)
    with pytest.raises(RequestError, match=reason):
        studio.run(task, {**BASE, **data})
    assert studio.registry.stats["load"] == 0


# ---------------------------------------------------------------------------- the real path
@pytest.fixture(scope="module")
def hub(tiny_xl_model_set, tmp_path_factory):
    """The tiny SDXL models under the real SDXL repo ids, in a Hugging Face cache."""
    return hub_cache_of(tiny_xl_model_set, tmp_path_factory.mktemp("hub-xl"),
                        ("base", "inpaint", "instruct", "controlnet:canny", "lcm_lora",
                         "ip_adapter", "ip_text", "controlnet_union"), real=SDXL)


def test_sdxl_repo_ids_load_from_the_hub_cache_offline(hub, tiny_settings, tmp_path,
                                                       monkeypatch):
    from studio.backend.service import Studio

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert SDXL is get_family("sdxl").model_set
    registry = ModelRegistry(SDXL, offline=True, cache_dir=hub)
    settings = replace(tiny_settings, models="sdxl", outputs_dir=tmp_path / "out")
    studio = Studio(settings, model_set=SDXL, registry=registry)
    plain = studio.txt2img(BASE)
    assert registry.key("text_encoder_2") == f"text_encoder_2@{SDXL.base}"
    assert plain.info["model"] == SDXL.base  # the Hub checkpoint, by its repo id
    canny = studio.control({**BASE, "units": [{"type": "canny", "image": sketch()}]})
    assert not np.array_equal(px(canny.image), px(plain.image))
    union = studio.control({**BASE, "units": [{"type": "canny", "image": sketch(),
                                               "model": "union"}]})
    assert not np.array_equal(px(union.image), px(plain.image))
    assert registry.key("controlnet_union") == \
        "controlnet_union@xinsir/controlnet-union-sdxl-1.0"
    assert studio.inpaint({**BASE, "image": scene(), "mask": box_mask()}).image.size == (64, 64)
    assert studio.run("instruct", {**BASE, "image": scene(), "max_side": 64}).image
    assert studio.txt2img({**BASE, "fast": True}).info["guidance_run"] == 1.0
    assert registry.stats[f"load:unet_inpaint@{SDXL.get('inpaint')}"] == 1
    # h94/IP-Adapter's SDXL file (sdxl_models/) with its ViT-H encoder (models/image_encoder)
    remix = studio.run("remix", {**BASE, "images": [scene()], "text_from": "a red circle",
                                 "text_to": "a blue circle"})
    assert remix.image.size == (64, 64)
    assert registry.key("ip_adapter") == "ip_adapter@h94/IP-Adapter"


def test_fp16_uses_the_vae_made_for_fp16_and_fp32_sdxls_own(tiny_xl_model_set, tmp_path):
    import shutil

    import torch

    from tests.support.hubcache import add_repo

    fix = SDXL.get("vae_fp16")
    assert fix == "madebyollin/sdxl-vae-fp16-fix"
    root = tmp_path / "vae-fix"  # that repo's layout: the VAE's files at its root
    shutil.copytree(Path(tiny_xl_model_set.base) / "vae", root)
    hub = tmp_path / "hub"
    add_repo(hub, fix, root)
    ms = tiny_xl_model_set.with_repos(vae_fp16=fix)
    fp32 = ModelRegistry(ms, offline=True, cache_dir=hub)
    fp16 = ModelRegistry(ms, offline=True, cache_dir=hub, dtype=torch.float16)
    assert fp32.key("vae") == f"vae@{tiny_xl_model_set.base}"
    assert fp16.key("vae") == f"vae@{fix}"
    vae = fp16.component("vae")  # from the Hub cache, offline, no subfolder
    assert vae.dtype == torch.float16 and type(vae).__name__ == "AutoencoderKL"
    assert fp16.key("unet") == fp32.key("unet")  # only the VAE changes
