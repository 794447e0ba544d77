"""The toy world's training script: seeded (same weights twice) and its export loads in the
studio through the same registry code as the shipped models (a few steps of each stage)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from toyworld import train

    work = tmp_path_factory.mktemp("toy-work")
    train.train_vae(work, steps=2, batch=4)
    train.train_base(work, steps=2, batch=4)
    train.train_controlnet(work, steps=1, batch=4)
    train.train_inpaint(work, steps=1, batch=4)
    train.train_instruct(work, steps=1, batch=4)
    train.train_gligen(work, steps=1, batch=4)
    train.train_gligen_inpaint(work, steps=1, batch=4)
    train.train_clip(work, steps=1, batch=4)
    train.train_taesd(work, steps=1, batch=4, pool=8)
    train.train_clip_text(work, steps=1, batch=4)
    train.train_ip_adapter(work, steps=1, batch=4)
    return work


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    (path,) = folder.glob("*.safetensors")
    return load_file(path)


def test_a_stage_gives_the_same_weights_twice(tmp_path, trained):
    from toyworld import train

    train.train_vae(tmp_path, steps=2, batch=4)
    again, first = _weights(tmp_path / "vae"), _weights(trained / "vae")
    assert again.keys() == first.keys()
    assert all(np.array_equal(again[k], first[k]) for k in first)


def test_export_is_a_model_set_the_studio_runs(tmp_path, trained):
    from studio.backend.models.builtin import toy_model_set
    from studio.backend.service import Studio
    from studio.settings import Settings
    from toyworld import train
    from toyworld.scenes import random_scene

    out = tmp_path / "toy"
    train.export(trained, out)
    for repo in train.REPOS.values():
        assert (out / repo).is_dir(), repo
    weights = [p for p in out.rglob("*.safetensors")]
    assert weights and all(w.stat().st_size < 20e6 for w in weights)
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))
    settings = Settings(models="toy", offline=True, cache_dir=tmp_path / "cache",
                        outputs_dir=tmp_path / "outputs")
    studio = Studio(settings, model_set=toy_model_set(settings.cache_dir, out))
    image = studio.txt2img({"prompt": "a red circle", "seed": 1, "steps": 2}).image
    assert image.size == (64, 64)  # no size given: the toy world's native 64 px
    scene = random_scene(3)
    out_ctrl = studio.control({"prompt": scene.caption, "seed": 1, "steps": 2, "units": [
        {"type": "scribble", "image": scene.scribble()}]})
    assert out_ctrl.image.size == (64, 64)
    remix = studio.run("remix", {"images": [scene.render()], "seed": 1, "steps": 2,
                                 "text_from": "a red circle", "text_to": "a blue circle"})
    assert remix.image.size == (64, 64)
    assert studio.registry.component("unet").dtype == studio.registry.dtype  # fp16 on disk
