"""Image loading and validation shared by every annotator; the registry; import weight."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from annotators import (
    ANNOTATOR_NAMES,
    AnnotatorInputError,
    get_annotator,
    load_image,
    map_size,
)


def test_import_is_light():
    code = (
        "import sys, annotators, studio.backend.annotate\n"
        "heavy = {'torch', 'cv2', 'controlnet_aux', 'transformers', 'segment_anything', "
        "'gradio', 'diffusers'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_annotator_name():
    with pytest.raises(AnnotatorInputError, match="Unknown annotator 'hed'.*canny"):
        get_annotator("hed")
    assert set(ANNOTATOR_NAMES) == {"canny", "depth", "openpose", "scribble", "sam", "grounding"}


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (Image.new("RGB", (0, 0)), "empty"),
        (np.zeros((1, 1, 3), np.uint8), "1x1 px, too small"),
        (Image.new("RGB", (1, 1)), "1x1 px, too small"),
        (np.zeros((9000, 16, 3), np.uint8), "longest side may be at most 8192"),
        # 49 MP without allocating it: a broadcast view has the shape but no memory
        (np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (7000, 7000, 3)), "at most 40 MP"),
        (np.zeros((64, 64, 3), np.float32), "must be uint8"),
        (np.zeros((64, 64, 2), np.uint8), "shaped HxW"),
        (None, "No image given"),
        ("", "No image given"),
        (12, "Unsupported image type"),
    ],
)
def test_bad_images_get_clear_errors(image, message):
    with pytest.raises(AnnotatorInputError, match=message):
        load_image(image)
    assert issubclass(AnnotatorInputError, ValueError)


def test_paths(tmp_path):
    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "a.png")
    arr = load_image(tmp_path / "a.png")
    assert arr.shape == (30, 40, 3) and tuple(arr[0, 0]) == (10, 20, 30)
    assert load_image(str(tmp_path / "a.png")).shape == (30, 40, 3)
    with pytest.raises(AnnotatorInputError, match="not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "b.png").write_bytes(b"not an image")
    with pytest.raises(AnnotatorInputError, match="not an image"):
        load_image(tmp_path / "b.png")
    # oversized files are refused from the header, before decoding
    Image.new("1", (8200, 16)).save(tmp_path / "wide.png")
    with pytest.raises(AnnotatorInputError, match="8200x16"):
        load_image(tmp_path / "wide.png")


def test_alpha_and_gray():
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[5:10, 5:10] = (255, 0, 0, 255)
    flat = load_image(rgba)
    assert flat.shape == (20, 20, 3)
    assert tuple(flat[0, 0]) == (255, 255, 255)  # transparent -> white, like controlnet_aux
    assert tuple(flat[6, 6]) == (255, 0, 0)
    assert load_image(Image.fromarray(rgba), keep_alpha=True).shape == (20, 20, 4)
    assert load_image(np.full((20, 30), 7, np.uint8)).shape == (20, 30, 3)


@pytest.mark.parametrize("size, res", [((640, 360), 512), ((360, 640), 512), ((500, 500), 384),
                                       ((1920, 1080), 768), ((333, 77), 64)])
def test_map_size_matches_controlnet_aux(size, res):
    from controlnet_aux.util import resize_image

    w, h = size
    out = resize_image(np.zeros((h, w, 3), np.uint8), res)
    assert map_size(w, h, res) == (out.shape[1], out.shape[0])


@pytest.mark.parametrize("res, message", [(10, "between 64 and 4096"), (512.5, "whole number"),
                                          ("512", "whole number"), (True, "whole number")])
def test_bad_resolution(res, message):
    canny = get_annotator("canny")
    with pytest.raises(AnnotatorInputError, match=message):
        canny(np.zeros((64, 64, 3), np.uint8), image_resolution=res)


def test_elongated_image_over_output_limit():
    canny = get_annotator("canny")
    with pytest.raises(AnnotatorInputError, match="would become"):
        canny(np.zeros((16, 4000, 3), np.uint8), 512, 512)


def test_weightless_annotators_take_no_source():
    with pytest.raises(AnnotatorInputError, match="needs no weights"):
        get_annotator("canny", "some/repo")
