"""SAM: one embedding per image (LRU cached), masks at the original size and aligned with the
clicks for non-square images, safe loading with the architecture read from the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annotators import AnnotatorInputError
from annotators.sam import SamAnnotator, SamConfig, parse_prompts


def _calls(module) -> list[int]:
    calls: list[int] = []
    module.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_n_clicks_one_embedding_and_lru(tiny_sources, photo):
    sam = SamAnnotator.from_pretrained(tiny_sources["sam"], cache_size=2)
    encoder_calls = _calls(sam.model.image_encoder)
    for x, y in [(10, 10), (600, 300), (320, 180), (50, 340), (639, 359)]:
        out = sam.annotate(photo, points=[[x, y, 1]])
        assert out.image.size == (640, 360) and out.image.mode == "L"
        assert set(np.unique(np.asarray(out.image))) <= {0, 255}
        assert len(out.info["candidates"]) == 3  # one click is ambiguous: 3 candidates
        assert out.info["score"] == max(out.info["candidates"])
    assert len(encoder_calls) == 1 and sam.embedding_computations == 1
    out = sam.annotate(photo, points=[[100, 100, 1], [200, 100, 0]], box=[50, 50, 300, 250])
    assert len(out.info["candidates"]) == 1 and out.info["cached_embedding"]
    assert len(encoder_calls) == 1

    other, third = photo[::-1].copy(), photo[:, ::-1].copy()
    sam.annotate(other, points=[[5, 5, 1]])
    sam.annotate(photo, points=[[5, 5, 1]])  # cache hit; `photo` becomes most recent
    assert len(encoder_calls) == 2
    sam.annotate(third, points=[[5, 5, 1]])  # evicts `other` (least recently used)
    sam.annotate(photo, points=[[6, 6, 1]])
    assert len(encoder_calls) == 3
    sam.annotate(other, points=[[5, 5, 1]])
    assert len(encoder_calls) == 4 == sam.embedding_computations


@pytest.fixture()
def stubbed_sam(tiny_sources, monkeypatch):
    """Tiny SAM whose decoder paints a disc at the first click (or fills the box) in SAM's own
    1024 px frame. Everything else is the real predictor: if prompts or masks were mapped
    between original and model coordinates wrongly, the mask would land off the click."""
    sam = SamAnnotator.from_pretrained(tiny_sources["sam"])
    seen: dict = {}
    prompt_forward = sam.model.prompt_encoder.forward

    def spy(points, boxes, masks):
        seen["points"], seen["boxes"] = points, boxes
        return prompt_forward(points, boxes, masks)

    def decoder(image_embeddings, image_pe, sparse_prompt_embeddings,
                dense_prompt_embeddings, multimask_output):
        n = sam.model.image_encoder.img_size // 4  # low-res mask side (256)
        yy, xx = torch.meshgrid(torch.arange(n) * 4 + 2.0, torch.arange(n) * 4 + 2.0,
                                indexing="ij")
        if seen["boxes"] is not None:
            x0, y0, x1, y1 = seen["boxes"].reshape(4)
            logits = torch.where((xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1), 10.0, -10.0)
        else:
            cx, cy = seen["points"][0][0, 0]
            logits = 40.0 - torch.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        k = 3 if multimask_output else 1
        return logits.expand(1, k, n, n).clone(), torch.ones(1, k)

    monkeypatch.setattr(sam.model.prompt_encoder, "forward", spy)
    monkeypatch.setattr(sam.model.mask_decoder, "forward", decoder)
    return sam


@pytest.mark.parametrize("shape", [(360, 640), (640, 360)])
def test_masks_align_with_clicks_on_non_square_images(stubbed_sam, photo, shape):
    img = photo if shape == (360, 640) else np.ascontiguousarray(photo.transpose(1, 0, 2))
    h, w = shape
    scale = 1024 / max(h, w)
    for i, (x, y) in enumerate([(0.8 * w, 0.85 * h), (0.1 * w, 0.2 * h)]):
        out = stubbed_sam.annotate(img, points=[[x, y, 1]])
        assert out.info["cached_embedding"] == (i > 0)
        mask = np.asarray(out.image) > 0
        assert mask.shape == (h, w)
        ys, xs = np.nonzero(mask)
        assert abs(xs.mean() - x) < 1.5 and abs(ys.mean() - y) < 1.5
        radius = 40 / scale  # the disc's radius, back in original pixels
        assert mask.sum() == pytest.approx(np.pi * radius**2, rel=0.1)


def test_box_mask_aligns(stubbed_sam, photo):
    box = [400, 50, 600, 200]
    mask = np.asarray(stubbed_sam.annotate(photo, box=box).image) > 0
    expected = np.zeros_like(mask)
    expected[50:200, 400:600] = True
    iou = (mask & expected).sum() / (mask | expected).sum()
    assert iou > 0.97


def test_resolutions_do_not_change_the_mask_size(stubbed_sam, photo):
    out = stubbed_sam.annotate(photo, 256, 256, points="[[320, 180, 1]]")
    assert out.image.size == (640, 360)


@pytest.mark.parametrize("points, box, message", [
    ([[700, 10, 1]], None, r"Click 1 at \(700, 10\) is outside the 640x360"),
    ([[10, -1, 1]], None, "outside"),
    ([[10, 10, 2]], None, "label 2; use 1 to include, 0 to exclude"),
    ([[10, 10, True]], None, "label True"),
    ([[10, 10]], None, r"must be \[x, y, label\]"),
    ("[[10, 10, 1]", None, "not valid JSON"),
    ("{}", None, "list of"),
    ([["a", 10, 1]], None, "x must be a number"),
    (None, [300, 50, 200, 100], "x1 <= x0"),
    (None, "[10, 10, 20]", r"must be \[x0, y0, x1, y1\]"),
    (None, [10, 10, 700, 100], "goes outside"),
    (None, None, "Click on the image or draw a box"),
    ("", "", "Click on the image or draw a box"),
    ([[10, 10, 0]], None, "All clicks exclude"),
])
def test_bad_prompts_get_clear_errors(points, box, message):
    with pytest.raises(AnnotatorInputError, match=message):
        parse_prompts(points, box, 640, 360)


def test_prompts_from_json():
    coords, labels, box = parse_prompts("[[1.5, 2, 1], [3, 4, 0]]", "[0, 0, 10, 20]", 64, 64)
    assert coords.tolist() == [[1.5, 2.0], [3.0, 4.0]] and labels.tolist() == [1, 0]
    assert box.tolist() == [0, 0, 10, 20]
    assert parse_prompts([[5, 5, 1]], [], 64, 64)[2] is None


def test_config_read_from_vit_b_weights():
    # The official ViT-B checkpoint's shapes must give back segment_anything's ViT-B exactly.
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        vit_b = sam_model_registry["vit_b"](checkpoint=None)
    config = SamConfig.from_state_dict(vit_b.state_dict())
    assert config == SamConfig()  # the defaults are _build_sam's ViT-B values
    assert config.encoder_global_attn_indexes == (2, 5, 8, 11)


def test_tiny_sam_is_small(tiny_sources):
    from annotators.weights import load_state_dict

    config = SamConfig.from_state_dict(load_state_dict(tiny_sources["sam"], annotator="sam"))
    assert (config.encoder_embed_dim, config.encoder_depth, config.image_size) == (32, 2, 1024)
