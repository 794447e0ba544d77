"""Instruct (InstructPix2Pix) backend on the tiny set: guidance, seeds, sizes, chains, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.backend.common import Cancelled, CancelToken, StudioError
from studio.backend.requests import RequestError
from studio.backend.tasks.instruct import EditHistory, InstructRequest, Version, output_size


def _image(w: int = 64, h: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(h, w, 3) * 255).astype(np.uint8))


def _req(**kw) -> dict:
    base = {"image": _image(), "prompt": "make it winter", "seed": 3, "steps": 2,
            "max_side": 64}
    base.update(kw)
    return base


def _px(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# ---------------------------------------------------------------------------- sizes
@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        ((640, 360), 128, (128, 72)),  # exact 16:9
        ((360, 640), 128, (72, 128)),  # portrait
        ((640, 480), 512, (512, 384)),
        ((100, 80), 512, (96, 80)),  # never upscaled, rounded to multiples of 8
        ((1000, 1000), 512, (512, 512)),
        ((700, 300), 256, (256, 112)),  # 109.7 -> 112
    ],
)
def test_output_size_keeps_aspect(size, max_side, expected) -> None:
    w, h = output_size(*size, max_side)
    assert (w, h) == expected
    assert w % 8 == 0 and h % 8 == 0
    # aspect kept within the rounding of one side to a multiple of 8
    assert abs(w / h - size[0] / size[1]) <= 8 / min(w, h) * (size[0] / size[1])


def test_output_size_too_elongated_or_small() -> None:
    with pytest.raises(RequestError, match="Raise max side to at least 384"):
        output_size(640, 100, 128)
    assert output_size(640, 100, 384) == (384, 64)
    with pytest.raises(RequestError, match="at least 64 px per side"):
        output_size(50, 50, 512)


def test_aspect_kept_end_to_end(studio) -> None:
    res = studio.instruct(_req(image=_image(640, 360), max_side=128))
    assert res.image.size == (128, 72)
    assert res.info["size"] == [128, 72] and res.info["input_size"] == [640, 360]
    assert res.info["request"]["width"] == 128 and res.info["request"]["height"] == 72
    assert Image.open(res.path).size == (128, 72)


# ---------------------------------------------------------------------------- behaviour
def test_image_guidance_changes_output(studio) -> None:
    low = studio.instruct(_req(image_guidance_scale=1.0)).image
    high = studio.instruct(_req(image_guidance_scale=4.0)).image
    diff = np.abs(_px(low) - _px(high))
    assert diff.mean() > 1.0, "image guidance had no visible effect"


def test_same_seed_and_inputs_reproduce_bit_identical(studio) -> None:
    a = studio.instruct(_req(seed=11))
    b = studio.instruct(_req(seed=11))
    c = studio.instruct(_req(seed=12))
    assert np.array_equal(_px(a.image), _px(b.image))
    assert not np.array_equal(_px(a.image), _px(c.image))
    assert a.info["seed"] == 11 and a.info["task"] == "instruct"
    # the saved request (input stored as a file) regenerates the same pixels
    again = studio.regenerate(a.path)
    assert np.array_equal(_px(again.image), _px(a.image))


def test_random_seed_is_reported(studio) -> None:
    res = studio.instruct(_req(seed=-1))
    assert 0 <= res.info["seed"] <= 2**32 - 1
    assert res.info["request"]["seed"] == res.info["seed"]


def test_chain_of_edits_and_branch_from_earlier_version(studio, tmp_path) -> None:
    original = tmp_path / "original.png"
    _image(seed=5).save(original)
    hist = EditHistory.start(str(original))
    results = []
    source = str(original)
    for i, text in enumerate(("make it winter", "add snow", "make it night")):
        res = studio.instruct(_req(image=source, prompt=text, seed=20 + i))
        hist.push(str(res.path), text, res.info["seed"])
        results.append(res)
        source = hist.current_path
    # each edit started from the previous output
    assert results[1].info["request"]["image"] == studio.outputs.name_of(results[0].path)
    assert results[2].info["request"]["image"] == studio.outputs.name_of(results[1].path)
    assert [v.path for v in hist.versions][1:] == [str(r.path) for r in results]

    hist.step_back(2)  # back to v1 = output of edit 1
    assert hist.current == 1 and hist.would_drop == 2
    edit3b = studio.instruct(_req(image=hist.current_path, prompt="make it night", seed=22))
    dropped = hist.push(str(edit3b.path), "make it night", 22)
    assert [v.path for v in dropped] == [str(results[1].path), str(results[2].path)]
    assert [v.path for v in hist.versions] == [str(original), str(results[0].path),
                                               str(edit3b.path)]
    # the input of edit 3' is the output of edit 1 (by file and by pixels)
    assert edit3b.info["request"]["image"] == studio.outputs.name_of(results[0].path)
    from_v1 = studio.instruct(_req(image=results[0].image, prompt="make it night", seed=22))
    from_v2 = studio.instruct(_req(image=results[1].image, prompt="make it night", seed=22))
    assert np.array_equal(_px(edit3b.image), _px(from_v1.image))
    assert not np.array_equal(_px(edit3b.image), _px(from_v2.image))


def test_fast_mode_ignores_image_guidance(studio) -> None:
    res = studio.instruct(_req(fast=True, steps=8))
    assert res.info["steps_run"] == 4 and res.info["guidance_run"] == 1.0
    assert res.info["image_guidance_run"] is None
    assert res.info["request"]["fast"] is True


def test_cancel_stops_the_run(studio) -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        studio.instruct(_req(steps=3), cancel=token)


def test_wrong_unet_gives_clear_error(fresh_studio) -> None:
    from studio.backend.service import Studio

    ms = fresh_studio.model_set
    studio = Studio(fresh_studio.settings,
                    model_set=ms.with_repos(instruct=ms.base))  # a 4-channel UNet
    with pytest.raises(StudioError, match="needs 8"):
        studio.instruct(_req())


def test_pipeline_shares_base_components(studio) -> None:
    from studio.backend.common import base_pipeline
    from studio.backend.tasks.instruct import instruct_pipeline

    reg = studio.registry
    pipe, base = instruct_pipeline(reg), base_pipeline(reg)
    assert pipe.vae is base.vae and pipe.text_encoder is base.text_encoder
    assert pipe.tokenizer is base.tokenizer
    assert pipe.unet is reg.component("unet_instruct") and pipe.unet is not base.unet
    assert pipe.unet.config.in_channels == 8


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt": ""}, "instruction is empty"),
        ({"prompt": "   "}, "instruction is empty"),
        ({"image": None}, "image is missing"),
        ({"image": b"this is not an image"}, "could not be read as an image"),
        ({"image": 42}, "image must be an image"),
        ({"image": "/no/such/file.png"}, "not .file.png. named by a path"),
        ({"guidance_scale": 31}, "text guidance must be between 0 and 30"),
        ({"guidance_scale": -1}, "text guidance must be between 0 and 30"),
        ({"guidance_scale": math.nan}, "text guidance must be a finite number"),
        ({"guidance_scale": "high"}, "text guidance must be a number"),
        ({"image_guidance_scale": 11}, "image guidance must be between 1 and 10"),
        ({"image_guidance_scale": -1}, "image guidance must be between 1 and 10"),
        ({"image_guidance_scale": 0.5}, "switches all guidance off"),
        ({"image_guidance_scale": math.nan}, "image guidance must be a finite number"),
        ({"image_guidance_scale": math.inf}, "image guidance must be a finite number"),
        ({"max_side": 100}, "max side must be a multiple of 8"),
        ({"max_side": 32}, "max side must be between 64 and 2048"),
        ({"steps": 0}, "steps must be between 1 and 150"),
        ({"scheduler": "nope"}, "unknown scheduler"),
    ],
)
def test_bad_input_is_rejected_clearly(change, message) -> None:
    with pytest.raises(RequestError, match=message):
        InstructRequest.from_dict(_req(**change)).validate()


def test_text_file_is_not_an_image(tmp_path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("hello, I am text")
    with pytest.raises(RequestError, match="could not be read as an image"):
        InstructRequest.from_dict(_req(image=str(path))).validate()


def test_errors_come_through_the_studio_before_any_model_runs(fresh_studio) -> None:
    with pytest.raises(RequestError, match="instruction is empty"):
        fresh_studio.instruct(_req(prompt=""))
    with pytest.raises(RequestError, match="unknown instruct parameters: width_px"):
        fresh_studio.instruct(_req(width_px=64))
    assert fresh_studio.registry.stats["load"] == 0


def test_request_to_dict_is_json_and_derives_size(tmp_path) -> None:
    import json

    path = tmp_path / "in.png"
    _image(200, 100).save(path)
    from studio.backend.outputs import OutputStore

    req = InstructRequest.from_dict(_req(image=str(path), max_side=128, width=999))
    req.validate()
    store = OutputStore(tmp_path / "outputs")
    req.record_inputs(store.record_input)  # the runner's hook: inputs saved by the outputs
    d = req.to_dict()
    json.dumps(d)
    assert (d["width"], d["height"]) == (128, 64)
    assert not Path(d["image"]).is_absolute() and d["task"] == "instruct"
    assert Image.open(store.folder / d["image"]).size == (200, 100)
    assert d["prompt"] == "make it winter" and d["image_guidance_scale"] == 1.5


# ---------------------------------------------------------------------------- history
def test_history_push_step_back_branch() -> None:
    h = EditHistory.start("v0.png")
    assert h.current == 0 and h.parent_path is None and h.would_drop == 0
    for i in (1, 2, 3):
        assert h.push(f"v{i}.png", f"edit {i}", seed=i) == []
    assert [v.path for v in h.versions] == ["v0.png", "v1.png", "v2.png", "v3.png"]
    assert h.current == 3 and h.parent_path == "v2.png"
    assert h.labels() == ["v0 original", "v1: edit 1", "v2: edit 2", "v3: edit 3"]

    h.step_back()
    h.step_back()
    assert h.current == 1 and h.current_path == "v1.png" and len(h) == 4  # nothing dropped yet
    assert h.would_drop == 2
    dropped = h.push("v2b.png", "edit 2b")
    assert dropped == [Version("v2.png", "edit 2", 2), Version("v3.png", "edit 3", 3)]
    assert [v.path for v in h.versions] == ["v0.png", "v1.png", "v2b.png"]
    assert h.current == 2 and h.parent_path == "v1.png"

    h.step_back(10)  # clamps at the original
    assert h.current == 0
    assert [v.path for v in h.branch(0)] == ["v1.png", "v2b.png"]
    assert len(h) == 1


def test_history_select_moves_the_cursor_only() -> None:
    h = EditHistory.start("a.png")
    h.push("b.png", "make it winter", 7)
    h.push("c.png", "add snow", 8)
    h.select(1)
    assert h.current_version == Version("b.png", "make it winter", 7) and len(h) == 3
    assert h.parent_path == "a.png" and h.would_drop == 1


@pytest.mark.parametrize("k", [-1, 3, 1.5, True, "1"])
def test_history_rejects_missing_versions(k) -> None:
    h = EditHistory.start("a.png")
    h.push("b.png", "x")
    h.push("c.png", "y")
    with pytest.raises(ValueError, match="does not exist"):
        h.select(k)
    assert h.current == 2


def test_empty_history_errors() -> None:
    h = EditHistory()
    with pytest.raises(ValueError, match="history is empty"):
        h.push("a.png", "x")
    with pytest.raises(ValueError, match="history is empty"):
        h.step_back()
    assert h.would_drop == 0
