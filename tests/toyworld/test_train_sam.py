"""The toy SAM's training script: a few steps lower the loss, and the export loads through
the studio's own SAM loader (architecture read from the tensor shapes) and segments."""

from __future__ import annotations

import numpy as np
import torch

from annotators import get_annotator
from toyworld import train_sam
from toyworld.scenes import random_scene


def test_training_lowers_the_loss_and_the_export_loads(tmp_path):
    import random

    from segment_anything import SamPredictor

    torch.manual_seed(0)
    scenes = [random_scene(1 + i) for i in range(2)]
    images = [np.asarray(s.render()) for s in scenes]
    rng = random.Random(0)
    prompts = [train_sam.prompt_for(s, 0, rng) for s in scenes]
    sam = train_sam.train(steps=12, batch=2)
    with torch.no_grad():
        trained_loss = float(train_sam.losses(sam, SamPredictor(sam), images, prompts))
    from annotators.sam import build_sam

    torch.manual_seed(0)
    fresh = build_sam(train_sam.toy_sam_config())
    with torch.no_grad():
        fresh_loss = float(train_sam.losses(fresh, SamPredictor(fresh), images, prompts))
    assert trained_loss < fresh_loss
    path = train_sam.export(sam, tmp_path)
    annotator = get_annotator("sam", path, offline=True)
    out = annotator.annotate(images[0], points=[[32, 32, 1]])
    assert out.image.size == (64, 64)
    assert annotator.model.image_encoder.img_size == 256
