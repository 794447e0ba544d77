"""Hires fix and upscalers on the tiny set: wiring, sizes, budgets, refusals.

The meaning (a toy image keeps its objects through the second pass) is in
tests/semantic/test_hires_semantics.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from studio.backend.outputs import read_metadata
from studio.backend.requests import RequestError, Txt2ImgRequest
from studio.backend.upscalers import UpscalerLibrary, tiled
from tests.support.upscalers import PICKLED_UPSCALER, RANDOM_UPSCALER, random_compact

BASE = {"prompt": "a red circle", "seed": 5, "steps": 2, "width": 64, "height": 64}
BOX = [{"phrase": "a red circle", "box": [0.1, 0.1, 0.6, 0.6]}]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), np.int16)


def test_hires_doubles_the_size_records_both_and_a_seed_reproduces(studio):
    ask = {**BASE, "hires_scale": 2, "hires_upscaler": "lanczos", "hires_steps": 2}
    first, again = studio.txt2img(ask), studio.txt2img(ask)
    assert first.image.size == (128, 128)
    assert (pixels(first.image) == pixels(again.image)).all()
    hires = first.info["hires"]
    assert hires["first_size"] == [64, 64] and hires["size"] == [128, 128]
    assert hires["steps_run"] == 1  # 2 steps x denoise 0.5
    text, _ = read_metadata(first.path)
    for part in ("Size: 64x64", "Hires upscale: 2", "Hires upscaler: lanczos",
                 "Hires steps: 2", "Denoising strength: 0.5"):
        assert part in text


def test_scale_one_is_the_plain_image_bit_for_bit(studio):
    plain = studio.txt2img(BASE)
    off = studio.txt2img({**BASE, "hires_scale": 1, "hires_upscaler": "lanczos"})
    assert off.image.size == (64, 64) and "hires" not in off.info
    assert (pixels(plain.image) == pixels(off.image)).all()
    assert "Hires" not in read_metadata(off.path)[0]


def test_latent_upscaler_enlarges_the_latents(studio, monkeypatch):
    from studio.backend.tasks import hires

    seen = []
    real = hires.upscale_latents

    def spy(latents, first, size):
        out = real(latents, first, size)
        seen.append((tuple(latents.shape[-2:]), tuple(out.shape[-2:])))
        return out

    monkeypatch.setattr(hires, "upscale_latents", spy)
    result = studio.txt2img({**BASE, "hires_scale": 1.5})
    assert result.image.size == (96, 96)
    assert seen == [((8, 8), (12, 12))]  # the VAE's 8x: 64 px -> 96 px


def test_control_second_pass_keeps_the_units(studio, monkeypatch):
    from studio.backend.tasks import control

    calls = []
    real = control.run_control

    def spy(registry, req, maps, init=None, *args, **kwargs):
        calls.append((len(req.units), [m.size for m in maps], init is not None,
                      req.width, req.strength if init is not None else None))
        return real(registry, req, maps, init, *args, **kwargs)

    monkeypatch.setattr(control, "run_control", spy)
    unit = {"type": "canny", "image": Image.new("RGB", (64, 64)), "weight": 0.8}
    result = studio.control({**BASE, "units": [unit], "hires_scale": 2,
                             "hires_upscaler": "lanczos", "hires_denoise": 0.6})
    assert result.image.size == (128, 128)
    assert calls == [(1, [(64, 64)], False, 64, None), (1, [(128, 128)], True, 128, 0.6)]


def test_layout_hires_is_plain_img2img_and_inside_boxes_refuses_it(studio):
    result = studio.layout({**BASE, "boxes": BOX, "gligen_fraction": 1.0, "hires_scale": 2})
    assert result.image.size == (128, 128)
    assert result.info["output_size"] == [128, 128]
    with pytest.raises(RequestError, match="inside_boxes"):
        studio.layout({**BASE, "boxes": BOX, "mode": "inside_boxes",
                       "image": Image.new("RGB", (64, 64)), "hires_scale": 2})


def test_the_second_pass_is_in_the_budget():
    plain = Txt2ImgRequest(prompt="x", steps=20, width=512, height=512)
    hires = Txt2ImgRequest(prompt="x", steps=20, width=512, height=512, hires_scale=2,
                           hires_denoise=0.5, hires_steps=10)
    for req in (plain, hires):
        req.validate()
    # + 10 steps x 0.5 at 1024x1024, guided (2 passes)
    assert hires.work() == pytest.approx(plain.work() + 5 * 1024 * 1024 / 1e6 * 2)
    assert hires.megapixels() == pytest.approx(1024 * 1024 / 1e6)


def test_final_size_and_scale_are_capped():
    with pytest.raises(RequestError, match="2048 px per side.*at most 2"):
        Txt2ImgRequest(prompt="x", width=1024, height=1024, hires_scale=4).validate()
    with pytest.raises(RequestError, match="hires_scale must be between 1 and 4"):
        Txt2ImgRequest(prompt="x", hires_scale=0.5).validate()


def test_upscaler_names_models_and_refusals(studio):
    names = studio.upscaler_names()
    assert names[:3] == ["latent", "lanczos", "none"] and RANDOM_UPSCALER in names
    assert PICKLED_UPSCALER not in names
    with pytest.raises(RequestError, match="unknown hires_upscaler 'R-ESRGAN 4x'"):
        studio.txt2img({**BASE, "hires_scale": 2, "hires_upscaler": "R-ESRGAN 4x"})
    with pytest.raises(RequestError, match="not a path"):
        studio.upscale({"image": Image.new("RGB", (16, 16)), "upscaler": "../x.safetensors"})


def test_a_pickled_upscaler_is_refused_unopened_with_the_conversion_command(studio,
                                                                             monkeypatch):
    import torch

    def never(*args, **kwargs):
        raise AssertionError("a pickled upscaler was opened")

    monkeypatch.setattr(torch, "load", never)
    for ask in ({"hires_scale": 2, "hires_upscaler": PICKLED_UPSCALER},):
        with pytest.raises(RequestError, match="weights_only=True") as err:
            studio.txt2img({**BASE, **ask})
        assert "safetensors.torch" in str(err.value) and "pickled" in str(err.value)


def test_a_model_upscaler_runs_by_name_in_hires_fix_and_upscale(studio):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), np.uint8))
    up = studio.upscale({"image": image, "scale": 3, "upscaler": RANDOM_UPSCALER})
    assert up.image.size == (144, 120)  # the 2x model twice, then Lanczos to 3x
    assert up.info["upscaler"] == RANDOM_UPSCALER
    assert "Postprocess upscaler: random-compact-2x" in read_metadata(up.path)[0]
    hires = studio.txt2img({**BASE, "hires_scale": 2, "hires_upscaler": RANDOM_UPSCALER})
    assert hires.image.size == (128, 128)
    with pytest.raises(RequestError, match="latent"):
        studio.upscale({"image": image, "upscaler": "latent"})


def test_loaded_by_file_and_tiled_equals_untiled(tmp_path):
    """The random net saved to safetensors loads back by name through spandrel; in tiles
    of 32 px (16 px shared) it gives the untiled result within rounding."""
    from safetensors.torch import save_file

    net = random_compact(seed=3)
    save_file(net.state_dict(), str(tmp_path / "net.safetensors"))
    library = UpscalerLibrary([tmp_path])
    descriptor = library.model("net")
    assert descriptor.scale == 2 and descriptor.architecture.id == "Compact"
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 70, 3), np.uint8))
    whole = pixels(library.run_model(descriptor, image, tile=512))
    parts = pixels(library.run_model(descriptor, image, tile=32))
    assert whole.shape == (100, 140, 3)
    assert np.abs(whole - parts).max() <= 1


def test_tiles_blend_to_a_constant_where_the_model_is_constant():
    """The blending weights sum to one everywhere: a model that outputs a constant gives
    exactly that constant over every seam."""
    out = tiled(lambda a: np.full((a.shape[0] * 2, a.shape[1] * 2, 3), 0.25, np.float32),
                np.zeros((90, 70, 3), np.float32), 2, tile=32, overlap=8)
    assert out.shape == (180, 140, 3) and np.allclose(out, 0.25)
