"""The toy SDXL world's training (`toyworld.train_xl`): the base stage builds SDXL's layout at
toy scale, saves with the step it reached, and `--resume` continues from that save."""

from __future__ import annotations

import json

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
