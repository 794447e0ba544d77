"""SeedSelect: the loss drops from the initial noise, a seed reproduces, bootstrap is cheap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from studio.backend.concepts import seedselect
from studio.backend.requests import RequestError


def examples(n: int = 3) -> list[Image.Image]:
    out = []
    for i in range(n):
        img = Image.new("RGB", (64, 64), (30, 60 + 40 * i, 200))
        ImageDraw.Draw(img).rectangle((10 + 4 * i, 14, 50, 54), fill=(250, 220, 30))
        out.append(img)
    return out


BASE = {
    "prompt": "a yellow square", "images": examples(), "seed": 3, "steps": 4,
    "sample_steps": 2, "width": 64, "height": 64, "guidance_scale": 2.0,
    "semantic_weight": 0.5, "bootstrap": 2, "bootstrap_steps": 1, "learning_rate": 0.05,
}


def px(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def run(studio):
    """One SeedSelect run with two bootstrap variants (shared by the tests below)."""
    return studio.seedselect(dict(BASE))


def test_total_loss_drops_from_the_initial_noise(run) -> None:
    info = run.info
    assert info["loss_final"]["total"] < info["loss_initial"]["total"]
    totals = info["first_run"]["total_losses"]
    assert len(totals) == BASE["steps"] + 1  # one per iteration plus the final z_T
    assert min(totals[1:]) < totals[0]
    for part in ("semantic", "appearance"):
        assert part in info["loss_initial"] and part in info["loss_final"]


def test_same_seed_reproduces_and_another_seed_differs(studio, run) -> None:
    again = studio.seedselect(dict(BASE))
    assert np.array_equal(px(run.image), px(again.image))
    assert again.info["first_run"]["total_losses"] == run.info["first_run"]["total_losses"]
    assert torch.equal(load_file(studio.outputs.folder / run.info["noise_file"])["noise_0"],
                       load_file(studio.outputs.folder / again.info["noise_file"])["noise_0"])
    other = studio.seedselect({**BASE, "seed": 4, "bootstrap": 0})
    assert np.abs(px(other.image) - px(run.image)).mean() > 0.5


def test_saved_image_regenerates_identically(studio, run) -> None:
    """The PNG's stored request (example images saved as files) re-runs the same optimisation."""
    again = studio.regenerate(run.path)
    assert np.array_equal(px(run.image), px(again.image))


def test_a_saved_variant_regenerates_its_set(studio, run) -> None:
    """A variant's PNG re-runs the same request: the same image and variants again."""
    again = studio.regenerate(studio.outputs.root / run.info["variants"][1])
    assert np.array_equal(px(run.image), px(again.image))
    assert np.array_equal(np.asarray(run.extra_images[1]), np.asarray(again.extra_images[1]))


def test_bootstrap_variants_are_much_cheaper_than_the_first_run(studio, run) -> None:
    first, boots = run.info["first_run"], run.info["bootstrap_runs"]
    assert len(boots) == 2 and len(run.extra_images) == 2 and len(run.info["variants"]) == 2
    for b in boots:
        assert b["iterations"] * 3 <= first["iterations"]
        assert b["seconds"] < first["seconds"]
        assert 1 <= len(b["subset"]) < len(BASE["images"])
    assert run.info["iterations_total"] == first["iterations"] + sum(b["iterations"]
                                                                      for b in boots)
    noises = load_file(studio.outputs.folder / run.info["noise_file"])
    assert sorted(noises) == ["noise_0", "noise_1", "noise_2"]
    assert not torch.equal(noises["noise_0"], noises["noise_1"])


def test_saved_noise_is_reusable_as_latents(studio, run) -> None:
    """The stored z_T, given as `latents=` to the plain txt2img pipeline, redraws the image."""
    from studio.backend.common import base_pipeline, cpu_generator

    pipe = base_pipeline(studio.registry)
    pipe.scheduler = studio.registry.new_scheduler("DDIM")
    z = load_file(studio.outputs.folder / run.info["noise_file"])["noise_0"]
    out = pipe(prompt=BASE["prompt"], num_inference_steps=BASE["sample_steps"],
               guidance_scale=BASE["guidance_scale"], width=64, height=64,
               generator=cpu_generator(BASE["seed"]), latents=z).images[0]
    assert np.array_equal(px(out), px(run.image))


def test_unet_calls_are_checkpointed_above_the_memory_threshold(studio, monkeypatch) -> None:
    calls = []
    real = seedselect.checkpoint

    def counting(fn, *args, **kwargs):
        calls.append(getattr(fn, "__name__", ""))
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(seedselect, "checkpoint", counting)
    monkeypatch.setattr(seedselect, "CHECKPOINT_LATENT_AREA", 0)  # every size is "large"
    studio.seedselect({**BASE, "steps": 1, "bootstrap": 0})
    assert calls.count("_eps") == BASE["sample_steps"]  # every UNet call of the iteration
    assert calls.count("_decode") == seedselect.LAST_K
    calls.clear()
    monkeypatch.setattr(seedselect, "CHECKPOINT_LATENT_AREA", 10**9)  # small: keep them
    studio.seedselect({**BASE, "steps": 1, "bootstrap": 0})
    assert calls == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": examples(2)}, "2 example images given; upload at least 3"),
        ({"images": []}, "0 example images given"),
        ({"images": [b"nope"] * 3}, "example image 1 could not be read as an image"),
        ({"scheduler": "Euler a"}, "scheduler must be 'DDIM'"),
        ({"fast": True}, "fast mode"),
        ({"semantic_weight": 2}, "semantic weight must be between 0 and 1"),
        ({"bootstrap": 99}, "bootstrap must be between 0 and 8"),
        ({"concept": "no-such-thing", "images": []}, "no concept named 'no-such-thing'"),
        ({"width": 100}, "width must be a multiple of 8"),
    ],
)
def test_bad_requests_get_clear_errors(studio, change, message) -> None:
    with pytest.raises(RequestError, match=message):
        studio.seedselect({**BASE, **change})


def test_seedselect_concept_saves_noises_and_restarts_from_them(
    tiny_settings, tiny_model_set, tmp_path
) -> None:
    from studio.backend.service import Studio
    from studio.settings import Settings

    settings = Settings(models="tiny", cache_dir=tiny_settings.cache_dir, offline=True,
                        outputs_dir=tmp_path / "outputs", concepts_dir=tmp_path / "concepts")
    studio = Studio(settings, model_set=tiny_model_set)
    made = studio.concept_train({
        "name": "rare-bird", "images": examples(), "method": "seedselect", "steps": 4,
        "bootstrap": 1, "resolution": 64, "sample_steps": 2, "seed": 1,
        "prompt": "a yellow square", "semantic_weight": 0.7,
    })
    concept = made.info["concept"]
    assert concept["method"] == "seedselect" and concept["noises"] == 2
    assert made.path is not None and len(made.extra_images) == 1
    final = made.info["training"]["loss_final"]["total"]
    assert final < made.info["training"]["loss_initial"]["total"]
    # start from the concept's noise, with its examples: the loss starts where it ended
    again = studio.seedselect({
        "concept": "rare-bird", "prompt": "a yellow square", "steps": 1, "sample_steps": 2,
        "width": 64, "height": 64, "seed": 1, "semantic_weight": 0.7,
    })
    assert again.info["loss_initial"]["total"] == pytest.approx(final, rel=1e-3)
    with pytest.raises(RequestError, match="needs"):
        studio.seedselect({"concept": "rare-bird", "width": 128, "height": 128, "steps": 1})
