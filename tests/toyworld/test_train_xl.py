"""The toy SDXL world's training (`toyworld.train_xl`): the base stage builds SDXL's layout at
toy scale, saves with the step it reached, and `--resume` continues from that save."""

from __future__ import annotations

import json

import pytest
import torch

from toyworld import train_xl


def test_base_saves_its_step_and_resumes_from_it(tmp_path, caplog):
    import logging

    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModelWithProjection

    train_xl.train_base(tmp_path, steps=3, batch=2, save_every=2)
    out = tmp_path / "base"
    assert json.loads((out / "progress.json").read_text()) == {"step": 3, "of": 3}
    before = UNet2DConditionModel.from_pretrained(out / "unet")
    assert before.config.addition_embed_type == "text_time"
    assert before.config.cross_attention_dim == train_xl.TEXT_DIM + train_xl.TEXT_DIM_2
    te2 = CLIPTextModelWithProjection.from_pretrained(out / "text_encoder_2")
    assert te2.config.hidden_size == train_xl.TEXT_DIM_2  # unlike the first encoder's

    with caplog.at_level(logging.INFO, logger="toyworld.train_xl"):
        train_xl.train_base(tmp_path, steps=5, batch=2, save_every=10, resume=True)
    assert "resuming base at step 3 of 5" in caplog.text
    assert json.loads((out / "progress.json").read_text()) == {"step": 5, "of": 5}
    after = UNet2DConditionModel.from_pretrained(out / "unet")
    moved = [not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters(),
                                                   strict=True)]
    assert any(moved)  # the resumed run trained on from the saved weights


@pytest.mark.slow
def test_later_stages_train_resume_and_export_a_set_every_tab_runs_on(tmp_path):
    """controlnet, inpaint and instruct train from the base stage's models, save their step,
    resume, and `export` writes the `toy-xl` set's folders, which load through the studio's
    SDXL pipelines (one step each: wiring, not meaning)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    from studio.backend.models.builtin import toy_xl_model_set
    from toyworld.evaluate import _params, toy_studio
    from toyworld.scenes import random_scene

    train_xl.train_base(tmp_path, steps=1, batch=2)
    for stage in ("controlnet", "inpaint", "instruct"):
        fn, _ = train_xl.STAGES[stage]
        fn(tmp_path, steps=1, batch=2)
        fn(tmp_path, steps=2, batch=2, resume=True)
        assert json.loads((tmp_path / stage / "progress.json").read_text()) == {
            "step": 2, "of": 2}, stage
    cn = ControlNetModel.from_pretrained(tmp_path / "controlnet" / "controlnet")
    assert cn.config.addition_embed_type == "text_time"  # SDXL's conditioning, from the base
    assert UNet2DConditionModel.from_pretrained(
        tmp_path / "inpaint" / "unet").config.in_channels == 9
    assert UNet2DConditionModel.from_pretrained(
        tmp_path / "instruct" / "unet").config.in_channels == 8

    out = train_xl.export(tmp_path, tmp_path / "toy-xl")
    ms = toy_xl_model_set(tmp_path / "cache", out)
    assert ms.family == "sdxl" and ms.controlnets.keys() == {"scribble", "canny"}
    studio = toy_studio(out, tmp_path / "work", name="toy-xl")
    scene = random_scene(5)
    one = _params(1, prompt=scene.caption, steps=1)
    mask = scene.render().convert("L").point(lambda v: 255 if v < 200 else 0)
    assert studio.control({**one, "units": [{"type": "canny", "image": scene.edges()}]}).image
    assert studio.inpaint({**one, "image": scene.render(), "mask": mask}).image
    assert studio.instruct({**one, "prompt": "make it blue", "image": scene.render()}).image
