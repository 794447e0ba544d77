"""The toy upscaler's training script: seeded, resumable, and its export is a file the
studio's upscaler library loads by name (spandrel detects the architecture); the shipped
one beats Lanczos on new scenes."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from safetensors.torch import load_file

from studio.backend.upscalers import UpscalerLibrary
from toyworld import train_upscaler
from toyworld.scenes import random_scene


def test_seeded_resumable_and_the_export_loads_by_name(tmp_path):
    a = train_upscaler.train(2, batch=2, folder=tmp_path / "a")
    b = train_upscaler.train(2, batch=2, folder=tmp_path / "b")
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert all((wa[k] == wb[k]).all() for k in wa)  # same seed, same weights
    train_upscaler.train(3, batch=2, resume=True, folder=a)
    assert json.loads((a / "progress.json").read_text())["step"] == 3
    out = train_upscaler.export(a, tmp_path / "ups" / "mine.safetensors")
    library = UpscalerLibrary([out.parent])
    assert library.model_names() == ["mine"] and library.scale_of("mine") == 2
    image = library.upscale(random_scene(1).render(), "mine", (128, 128))
    assert image.size == (128, 128)


def test_the_shipped_upscaler_is_sharper_than_lanczos():
    library = UpscalerLibrary([train_upscaler.EXPORT.parent])
    errors = {"model": [], "lanczos": []}
    for i in range(4):
        scene = random_scene(900_000_000 + i)
        target = np.asarray(train_upscaler.doubled(scene).render(), np.float32)
        low = scene.render()
        for name, image in (("model", library.upscale(low, "toy-compact-2x", (128, 128))),
                            ("lanczos", low.resize((128, 128), Image.Resampling.LANCZOS))):
            errors[name].append(np.abs(np.asarray(image, np.float32) - target).mean())
    assert np.mean(errors["model"]) < 0.7 * np.mean(errors["lanczos"])
