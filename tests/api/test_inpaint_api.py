"""/inpaint and /sam_mask through gradio_client on the tiny set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("inpaint-api")
    rng = np.random.RandomState(0)
    paths: dict[str, Path] = {}

    def save(name: str, arr: np.ndarray) -> None:
        paths[name] = root / f"{name}.png"
        Image.fromarray(arr).save(paths[name])

    save("small", (rng.rand(64, 96, 3) * 255).astype(np.uint8))
    mask = np.zeros((64, 96), np.uint8)
    mask[10:40, 20:60] = 255
    save("small_mask", mask)
    save("empty_mask", np.zeros((64, 96), np.uint8))
    save("square_mask", np.full((64, 64), 255, np.uint8))
    save("wide", (rng.rand(360, 640, 3) * 255).astype(np.uint8))
    wide_mask = np.zeros((360, 640), np.uint8)
    wide_mask[250:300, 60:120] = 255  # bottom left, off centre
    save("wide_mask", wide_mask)
    paths["text"] = root / "notes.png"
    paths["text"].write_text("not an image")
    return {k: str(v) for k, v in paths.items()}


def _inpaint(client, image: str, mask: str, **kw) -> tuple[str, dict]:
    from gradio_client import handle_file

    args = {"prompt": "a red ball", "seed": 1, "steps": 2, "mode": "blend"}
    args.update(kw)
    path, info = client.predict(handle_file(image), handle_file(mask), **args,
                                api_name="/inpaint")
    return path, json.loads(info)


def _outside_changed(out: str, image: str, mask: str) -> int:
    a = np.asarray(Image.open(out).convert("RGB"))
    b = np.asarray(Image.open(image).convert("RGB"))
    outside = np.asarray(Image.open(mask).convert("L")) < 128
    assert a.shape == b.shape
    return int(((a != b).any(-1) & outside).sum())


def test_inpaint_full_image_keeps_outside_exact(client, files) -> None:
    out, info = _inpaint(client, files["small"], files["small_mask"], mode="inpaint")
    assert Image.open(out).size == (96, 64)
    assert _outside_changed(out, files["small"], files["small_mask"]) == 0
    assert info["mode_run"] == "inpaint" and info["work_size"] == [96, 64]
    assert info["request"]["task"] == "inpaint" and info["seed"] == 1


def test_inpaint_only_masked_crops_where_the_mask_is(client, files) -> None:
    out, info = _inpaint(client, files["wide"], files["wide_mask"], only_masked=True,
                         padding=8, width=64, height=64, mask_blur=2)
    assert Image.open(out).size == (640, 360)
    assert _outside_changed(out, files["wide"], files["wide_mask"]) == 0
    x0, y0, x1, y1 = info["crop"]
    assert x0 <= 52 and y0 <= 242 and x1 >= 128 and y1 >= 308
    assert x1 - x0 < 160 and y1 - y0 < 160


BAD_CALLS = [
    ("small", "empty_mask", {}, "mask is empty"),
    ("small", "square_mask", {}, "mask is 64x64 but image is 96x64"),
    ("text", "small_mask", {}, "image could not be read as an image"),
    ("small", "text", {}, "mask could not be read as an image"),
    ("small", "small_mask", {"strength": 0}, "strength must be more than 0 and at most 1"),
    ("small", "small_mask", {"strength": 1.5}, "strength must be more than 0 and at most 1"),
    ("small", "small_mask", {"mode": "paint"}, "unknown mode 'paint'"),
    ("small", "small_mask", {"steps": 0}, "steps must be between 1 and 150"),
]


def test_bad_inpaint_calls_give_clear_messages_then_next_call_works(client, files) -> None:
    from gradio_client.exceptions import AppError

    for image, mask, kw, message in BAD_CALLS:
        with pytest.raises(AppError, match=message):
            _inpaint(client, files[image], files[mask], **kw)
    out, info = _inpaint(client, files["small"], files["small_mask"], seed=5, steps=1)
    assert info["seed"] == 5 and Image.open(out).size == (96, 64)


def test_outpaint_grows_the_canvas_and_keeps_the_image(client, files) -> None:
    from gradio_client import handle_file

    path, info = client.predict(handle_file(files["small"]), prompt="sky", seed=2, steps=2,
                                left=0, right=32, top=16, bottom=0, api_name="/outpaint")
    out, src = Image.open(path).convert("RGB"), Image.open(files["small"]).convert("RGB")
    assert out.size == (96 + 32, 64 + 16)
    assert (np.asarray(out)[16:, :96] == np.asarray(src)).all()
    assert json.loads(info)["original_box"] == [0, 16, 96, 80]


def test_sam_clicks_give_a_mask_inpaint_accepts(client, files) -> None:
    from gradio_client import handle_file

    mask_path, info_text = client.predict(
        handle_file(files["wide"]), json.dumps([[90, 275, 1], [400, 100, 0]]), "",
        api_name="/sam_mask",
    )
    info = json.loads(info_text)
    mask = Image.open(mask_path)
    assert mask.size == (640, 360)
    assert info["points"] == [[90, 275, 1], [400, 100, 0]] and info["box"] is None
    assert info["mask_pixels"] == int((np.asarray(mask.convert("L")) >= 128).sum())
    if info["mask_pixels"] == 0:
        pytest.skip("the tiny random SAM selected nothing for these clicks")
    out, inpaint_info = _inpaint(client, files["wide"], mask_path, only_masked=True,
                                 width=64, height=64)
    assert _outside_changed(out, files["wide"], mask_path) == 0
    assert inpaint_info["mask_pixels"] == info["mask_pixels"]


def test_sam_with_box_and_bad_clicks(client, files) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    mask_path, info_text = client.predict(handle_file(files["small"]), "[]", "[10, 5, 60, 40]",
                                          api_name="/sam_mask")
    assert Image.open(mask_path).size == (96, 64)
    assert json.loads(info_text)["box"] == [10, 5, 60, 40]
    for points, box, message in [("[[1, 2]]", "", "point 1 must be"),
                                 ("[[500, 20, 1]]", "", "outside the 96x64 image"),
                                 ("[]", "", "no clicks and no box"),
                                 ("[]", "[5, 5, 2, 2]", "x1 > x0")]:
        with pytest.raises(AppError, match=message):
            client.predict(handle_file(files["small"]), points, box, api_name="/sam_mask")
