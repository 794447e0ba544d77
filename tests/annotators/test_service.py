"""AnnotatorService: the backend adapter the UI and the named API call."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from annotators import AnnotatorInputError, MissingWeightsError
from studio.backend.annotate import AnnotatorService


@pytest.fixture(scope="module")
def service(tiny_sources):
    return AnnotatorService(tiny_sources, device="cpu", offline=True, sam_cache_size=2)


def test_names_and_lazy_loading(tiny_sources):
    svc = AnnotatorService(tiny_sources, device="auto", offline=True)
    assert svc.names == ["canny", "depth", "openpose", "scribble", "sam", "grounding"]
    assert svc.load_counts == {}
    assert svc.get("canny") is svc.get("canny") and svc.load_counts == {"canny": 1}
    assert svc.device in ("cpu", "cuda", "mps")  # "auto" resolved on first load


def test_annotate_maps(service, photo, tmp_path):
    edges, info = service.annotate(photo, "canny", 512, low_threshold=50, high_threshold=150)
    assert edges.size == (896, 512) and info == {"annotator": "canny", "size": [896, 512]}
    Image.fromarray(photo).save(tmp_path / "photo.png")
    depth, info = service.annotate(str(tmp_path / "photo.png"), "depth", 256)
    assert depth.size == (448, 256) and info["annotator"] == "depth"
    drawing = np.full((360, 640, 3), 255, np.uint8)
    drawing[100:104, 50:600] = 0
    scribble, _ = service.annotate(drawing, "Scribble", 512, thickness=1)
    assert np.asarray(scribble)[141:145, 100:800].all()  # rows 100-104 scaled by 1.4


def test_openpose_keypoints_and_draw_pose(service, photo):
    pose, info = service.annotate(photo, "openpose", 256, detect_resolution=256)
    assert info["keypoints"] == {"canvas_width": 448, "canvas_height": 256, "people": []}
    person = {"pose_keypoints_2d": [0.0] * 3 + [224.0, 60.0, 1.0] + [0.0] * 48}
    edited = json.dumps({**info["keypoints"], "people": [person]})
    redrawn = service.draw_pose(edited, 448, 256)
    assert redrawn.size == (448, 256)
    assert tuple(np.asarray(redrawn)[60, 224]) == (255, 85, 0)  # the neck's colour
    with pytest.raises(AnnotatorInputError, match="not valid JSON"):
        service.draw_pose("{oops", 448, 256)


def test_sam_mask(service, photo):
    mask, info = service.sam_mask(photo, "[[320, 180, 1]]", "")
    assert mask.mode == "L" and mask.size == (640, 360)
    assert set(np.unique(np.asarray(mask))) <= {0, 255}
    assert info["embedding_computations"] == 1 and len(info["candidates"]) == 3
    assert info["score"] == max(info["candidates"])
    mask, info = service.sam_mask(photo, [[10, 20, 1], [400, 300, 0]], [0, 0, 300, 200])
    assert mask.size == (640, 360) and info["embedding_computations"] == 1
    mask, info = service.annotate(photo, "sam", points=[[1, 1, 1]])
    assert info["embedding_computations"] == 1


@pytest.mark.parametrize("call, message", [
    (lambda s, im: s.annotate(im, "hed"), "Unknown annotator 'hed'"),
    (lambda s, im: s.annotate(im, "canny", sigma=3), r"Unknown option\(s\) \['sigma'\]"),
    (lambda s, im: s.annotate(im, "canny", 8), "between 64 and 4096"),
    (lambda s, im: s.annotate(np.zeros((1, 1, 3), np.uint8), "canny"), "too small"),
    (lambda s, im: s.sam_mask(im, [[641, 10, 1]], None), "outside the 640x360"),
    (lambda s, im: s.sam_mask(im, [[1, 1, 5]], None), "label 5"),
    (lambda s, im: s.sam_mask(im, "[[1, 1, 1]", None), "not valid JSON"),
    (lambda s, im: s.sam_mask(im, None, "[30, 10, 20, 50]"), "x1 <= x0"),
    (lambda s, im: s.sam_mask(im, None, None), "Click on the image"),
    (lambda s, im: s.draw_pose({"people": []}, 0, 0), "empty"),
])
def test_validation_errors_are_value_errors(service, photo, call, message):
    with pytest.raises(ValueError, match=message):
        call(service, photo)


def test_bad_configuration(tmp_path):
    with pytest.raises(ValueError, match="Unknown annotator source"):
        AnnotatorService({"hed": "x"})
    svc = AnnotatorService(None, cache_dir=tmp_path, offline=True)
    assert svc.sources["openpose"] == "lllyasviel/Annotators"
    with pytest.raises(MissingWeightsError, match="hand_pose_model|body_pose_model"):
        svc.annotate(np.zeros((64, 64, 3), np.uint8), "openpose")
