"""Depth: requested size, full 0-255 range, near bright; DPT loading through transformers."""

from __future__ import annotations

import numpy as np
import pytest

from annotators import MissingWeightsError, WeightsFormatError, get_annotator
from annotators.depth import DepthAnnotator, disparity_to_image


def test_tiny_depth_size_and_range(tiny_sources, photo):
    depth = get_annotator("depth", tiny_sources["depth"], offline=True)
    out = depth.annotate(photo, detect_resolution=384, image_resolution=512)
    arr = np.asarray(out.image)
    assert out.image.size == (896, 512) and out.image.mode == "RGB"
    assert out.info["size"] == [896, 512]
    assert arr.dtype == np.uint8 and arr.min() == 0 and arr.max() == 255
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    assert depth(photo, 512, 256).size == (448, 256)


def test_near_is_bright():
    # MiDaS predicts inverse depth: a larger value is nearer and must come out brighter.
    disparity = np.tile(np.linspace(0.1, 5.0, 64, dtype=np.float32), (32, 1))
    img = disparity_to_image(disparity)
    assert img.shape == (32, 64, 3)
    assert img[0, 0, 0] == 0 and img[0, -1, 0] == 255
    assert (np.diff(img[0, :, 0].astype(int)) >= 0).all()
    assert disparity_to_image(np.ones((8, 8), np.float32)).max() == 0  # flat: no NaNs


def test_model_sees_its_processor_size(tiny_sources, photo):
    depth = get_annotator("depth", tiny_sources["depth"], offline=True)
    seen = []
    depth.model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(tuple(kwargs["pixel_values"].shape[-2:])),
        with_kwargs=True,
    )
    depth(photo, 512, 256)
    assert seen == [(64, 64)]  # the tiny DPT-Hybrid's native size, like 384 for the real one


def test_not_a_dpt_model(tmp_path):
    from transformers import ViTConfig

    ViTConfig(hidden_size=8).save_pretrained(tmp_path)
    with pytest.raises(WeightsFormatError, match="not a DPT depth model"):
        DepthAnnotator.from_pretrained(tmp_path)


def test_offline_without_weights_says_how_to_get_them(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        get_annotator("depth", cache_dir=tmp_path, offline=True)
    message = str(err.value)
    assert "Intel/dpt-hybrid-midas" in message and "hf download" in message
    assert "offline" in message
