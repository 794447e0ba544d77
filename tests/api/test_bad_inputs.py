"""The bad-input catalogue: malformed requests across every endpoint.

Each must come back as a clear error (gradio_client `AppError` whose text says what is wrong),
and a valid request right after must still succeed: bad input never takes the server down.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image, PngImagePlugin
from safetensors.torch import save_file

SMALL = {"seed": 1, "steps": 1, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad-inputs")
    rng = np.random.default_rng(0)
    good = d / "good.png"
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), np.uint8)).save(good)
    mask = d / "mask.png"
    m = np.zeros((64, 96), np.uint8)
    m[16:48, 32:64] = 255
    Image.fromarray(m).save(mask)
    Image.new("L", (96, 64), 0).save(d / "empty_mask.png")
    Image.new("L", (50, 50), 255).save(d / "square_mask.png")
    Image.new("RGB", (1, 1)).save(d / "one_pixel.png")
    Image.new("1", (10000, 10000)).save(d / "huge.png")  # 100 MP, tiny on disk
    Image.new("1", (12000, 12000)).save(d / "bomb.png")  # 144 MP: under Pillow's own limit
    (d / "oversized.png").write_bytes(good.read_bytes() + bytes(13 * 1024 * 1024))
    save_file({"emb_params": torch.zeros(50_000, 32)}, str(d / "many_vectors.safetensors"))
    # model files: over --max-file-mb (12) but under --max-model-mb (20), and over that
    save_file({"something": torch.zeros(208, 128, 128)}, str(d / "big_model.safetensors"))
    (d / "huge_model.safetensors").write_bytes(bytes(21 * 1024 * 1024))
    crafted = PngImagePlugin.PngInfo()  # metadata that inflates to 64 MB, and a forged path
    crafted.add_text("studio_request", json.dumps({"request": {"image": "/etc/passwd"}}))
    crafted.add_text("parameters", "x" * (64 * 1024 * 1024), zip=True)
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), np.uint8)).save(
        d / "crafted_meta.png", pnginfo=crafted)
    (d / "not_image.txt").write_text("this is not an image")
    raw = good.read_bytes()
    (d / "truncated.png").write_bytes(raw[: len(raw) // 3])
    (d / "empty.png").write_bytes(b"")
    return {p.stem: str(p) for p in d.iterdir()}


def f(files: dict[str, str], name: str):
    return handle_file(files[name])


def cases(files: dict[str, str]) -> list[tuple[str, dict, str]]:
    """(endpoint, kwargs, a fragment the error message must contain)."""
    unit = {"type": "canny", "weight": 1.0, "start": 0.0, "end": 1.0, "preprocess": False}
    box = {"phrase": "a red circle", "box": [0.1, 0.1, 0.5, 0.5]}
    c: list[tuple[str, dict, str]] = [
        # --- /txt2img: numbers, sizes, prompts, choices
        ("/txt2img", {"prompt": "", **SMALL}, "prompt is empty"),
        ("/txt2img", {"prompt": "x" * 10_000, **SMALL}, "10000 characters"),
        ("/txt2img", {"prompt": "ok", **{**SMALL, "width": 100}}, "multiple of 8"),
        ("/txt2img", {"prompt": "ok", **{**SMALL, "width": 0}}, "Width"),
        ("/txt2img", {"prompt": "ok", **{**SMALL, "height": 100000}}, "Height"),
        ("/txt2img", {"prompt": "ok", **{**SMALL, "steps": 0}}, "Steps"),
        ("/txt2img", {"prompt": "ok", **{**SMALL, "steps": 10000}}, "Steps"),
        ("/txt2img", {"prompt": "ok", **{**SMALL, "steps": -3}}, "Steps"),
        ("/txt2img", {"prompt": "ok", **SMALL, "guidance_scale": -1}, "Guidance"),
        ("/txt2img", {"prompt": "ok", **SMALL, "guidance_scale": "lots"}, "Guidance"),
        ("/txt2img", {"prompt": "ok", **SMALL, "scheduler": "Turbo 9000"}, "Turbo 9000"),
        # --- the trailing model: a name /models lists, never a path
        ("/txt2img", {"prompt": "ok", **SMALL, "model": "/etc/passwd"}, "looks like a path"),
        ("/txt2img", {"prompt": "ok", **SMALL, "model": "..\\x.safetensors"},
         "looks like a path"),
        ("/txt2img", {"prompt": "ok", **SMALL, "model": "sd_xl_base_1.0"},
         "unknown model 'sd_xl_base_1.0'; this server has: tiny"),
        ("/control", {"prompt": "ok", **SMALL, "images": [f(files, "good")],
                      "units": json.dumps([unit]), "model": "x" * 400},
         "must be the name of one of the server's models"),
        ("/txt2img", {"prompt": "ok", **{**SMALL, "seed": -7}}, "seed"),
        ("/txt2img", {"prompt": "ok", **{**SMALL, "width": 64.5}}, "whole number"),
        # --- /control: units JSON, ranges, types, lengths, files
        ("/control", {"prompt": "ok", **SMALL, "images": [f(files, "good")],
                      "units": "not json"}, "JSON"),
        ("/control", {"prompt": "ok", **SMALL, "images": [f(files, "good")],
                      "units": json.dumps([{**unit, "type": "lasers"}])}, "lasers"),
        ("/control", {"prompt": "ok", **SMALL, "images": [f(files, "good")],
                      "units": json.dumps([{**unit, "start": 0.8, "end": 0.2}])}, "start"),
        ("/control", {"prompt": "ok", **SMALL, "images": [f(files, "good")],
                      "units": json.dumps([{**unit, "end": 1.5}])}, "end"),
        ("/control", {"prompt": "ok", **SMALL, "images": [f(files, "good")],
                      "units": json.dumps([{**unit, "weight": -1}])}, "weight"),
        ("/control", {"prompt": "ok", **SMALL, "images": [f(files, "good")],
                      "units": json.dumps([unit, unit])}, "units"),
        ("/control", {"prompt": "ok", **SMALL, "images": [f(files, "not_image")],
                      "units": json.dumps([unit])}, "image"),
        ("/control", {"prompt": "ok", **SMALL, "images": [f(files, "truncated")],
                      "units": json.dumps([unit])}, "image"),
        # --- /annotate
        ("/annotate", {"image": f(files, "good"), "annotator": "xray"}, "xray"),
        ("/annotate", {"image": f(files, "one_pixel"), "annotator": "canny"}, "1x1"),
        ("/annotate", {"image": f(files, "huge"), "annotator": "canny"}, "10000"),
        ("/annotate", {"image": f(files, "not_image"), "annotator": "canny"}, "image"),
        # --- /layout: boxes
        ("/layout", {"prompt": "ok", **SMALL, "boxes": "[{"}, "JSON"),
        ("/layout", {"prompt": "ok", **SMALL,
                     "boxes": json.dumps([{**box, "box": [0.5, 0.1, 0.2, 0.5]}])}, "x1"),
        ("/layout", {"prompt": "ok", **SMALL,
                     "boxes": json.dumps([{**box, "box": [0.1, 0.1, 1.5, 0.5]}])}, "[0, 1]"),
        ("/layout", {"prompt": "ok", **SMALL, "boxes": json.dumps([box] * 31)}, "30"),
        ("/layout", {"prompt": "ok", **SMALL,
                     "boxes": json.dumps([{**box, "phrase": " "}])}, "phrase"),
        # --- /inpaint: masks, strength, files
        ("/inpaint", {"image": f(files, "good"), "mask": f(files, "empty_mask"),
                      "prompt": "ok", "steps": 1}, "empty"),
        ("/inpaint", {"image": f(files, "good"), "mask": f(files, "square_mask"),
                      "prompt": "ok", "steps": 1}, "mask is 50x50 but image is 96x64"),
        ("/inpaint", {"image": f(files, "good"), "mask": f(files, "mask"), "prompt": "ok",
                      "steps": 1, "strength": 1.5}, "strength"),
        ("/inpaint", {"image": f(files, "good"), "mask": f(files, "mask"), "prompt": "ok",
                      "steps": 1, "strength": 0}, "strength"),
        ("/inpaint", {"image": f(files, "not_image"), "mask": f(files, "mask"),
                      "prompt": "ok", "steps": 1}, "image"),
        ("/inpaint", {"image": f(files, "good"), "mask": f(files, "mask"), "prompt": "ok",
                      "steps": 1, "mode": "magic"}, "magic"),
        # --- /outpaint: sides, the canvas limit
        ("/outpaint", {"image": f(files, "good"), "prompt": "ok", "steps": 1}, "nothing to extend"),
        ("/outpaint", {"image": f(files, "good"), "prompt": "ok", "steps": 1, "left": -8},
         "left (pixels to add) must be between 0 and 2048"),
        ("/outpaint", {"image": f(files, "good"), "prompt": "ok", "steps": 1, "right": 5000},
         "right (pixels to add) must be between 0 and 2048"),
        ("/outpaint", {"image": f(files, "huge"), "prompt": "ok", "steps": 1, "right": 8},
         "over 40 megapixels"),
        # --- /sam_mask: points and boxes
        ("/sam_mask", {"image": f(files, "good"), "points": "[[10, 10, 1]"}, "JSON"),
        ("/sam_mask", {"image": f(files, "good"), "points": "[[500, 10, 1]]"}, "outside"),
        ("/sam_mask", {"image": f(files, "good"), "points": "[[10, 10, 7]]"}, "label"),
        ("/sam_mask", {"image": f(files, "good"), "points": json.dumps([[1, 1, 1]] * 65)},
         "at most 64"),
        ("/sam_mask", {"image": f(files, "good"), "points": "[" * 50_000 + "]" * 50_000},
         "nested too deeply"),
        ("/sam_mask", {"image": f(files, "good"), "points": "[]",
                       "box": "[50, 10, 20, 40]"}, "x1"),
        # --- /text_mask: words
        ("/text_mask", {"image": f(files, "good"), "text": "", "threshold": 0.3}, "text is empty"),
        ("/text_mask", {"image": f(files, "good"), "text": "a cat " * 100}, "the limit is 500"),
        ("/text_mask", {"image": f(files, "good"), "text": "a cat", "threshold": 7},
         "threshold"),
        ("/text_mask", {"image": f(files, "good"), "text": "a cat", "threshold": 1.0},
         "nothing matching 'a cat'"),
        ("/text_mask", {"image": f(files, "empty"), "text": "a cat"}, "image"),
        # --- /instruct
        ("/instruct", {"image": f(files, "good"), "instruction": "", "steps": 1}, "instruction"),
        ("/instruct", {"image": f(files, "empty"), "instruction": "make it blue",
                       "steps": 1}, "image"),
        ("/instruct", {"image": f(files, "good"), "instruction": "make it blue", "steps": 1,
                       "image_guidance": -2}, "mage guidance"),
        ("/instruct", {"image": f(files, "good"), "instruction": "make it blue", "steps": 1,
                       "text_guidance": 99}, "ext guidance"),
        ("/instruct", {"image": f(files, "good"), "instruction": "highlight the cat in teal",
                       "steps": 1}, "not a colour"),
        # --- concepts
        ("/concept_train", {"name": "<dog>", "images": [], "method": "textual_inversion",
                            "steps": 1}, "image"),
        ("/concept_train", {"name": "<dog>", "images": [f(files, "good")] * 100,
                            "method": "textual_inversion", "steps": 1}, "20"),
        ("/concept_train", {"name": "<dog>", "images": [f(files, "not_image")] * 3,
                            "method": "textual_inversion", "steps": 1}, "image"),
        ("/concept_train", {"name": "no spaces allowed!", "images": [f(files, "good")] * 3,
                            "method": "textual_inversion", "steps": 1}, "token"),
        ("/concept_train", {"name": "<dog>", "images": [f(files, "good")] * 3,
                            "method": "dreamy", "steps": 1}, "dreamy"),
        ("/seedselect", {"prompt": "a dog", "images": [], "steps": 1}, "image"),
        # --- /remix: counts, weights, captions, ranges, unreadable pictures
        ("/remix", {"images": [], **SMALL}, "0 images given"),
        ("/remix", {"images": [f(files, "good")] * 5, **SMALL}, "1 to 4 pictures"),
        ("/remix", {"images": [f(files, "good")] * 2, "weights": "[1]", **SMALL},
         "one weight per image"),
        ("/remix", {"images": [f(files, "good")] * 2, "weights": "[1, -2]", **SMALL},
         "0 or more"),
        ("/remix", {"images": [f(files, "good")] * 2, "weights": "[0, 0]", **SMALL},
         "all weights are 0"),
        ("/remix", {"images": [f(files, "good")], "text_from": "a cat", **SMALL},
         "write text_to too"),
        ("/remix", {"images": [f(files, "good")], "text_amount": 3, **SMALL}, "Amount"),
        ("/remix", {"images": [f(files, "not_image")], **SMALL}, "image"),
        # --- exposure: bombs under Pillow's limit, oversized uploads, too many files, huge
        # embeddings, crafted metadata (raw path payloads: test_exposure.py)
        ("/instruct", {"image": f(files, "bomb"), "instruction": "make it blue", "steps": 1},
         "far too large"),
        ("/annotate", {"image": f(files, "bomb"), "annotator": "canny"}, "far too large"),
        ("/inpaint", {"image": f(files, "bomb"), "mask": f(files, "mask"), "prompt": "ok",
                      "steps": 1}, "far too large"),
        # an image over --max-file-mb (gradio's own limit is --max-model-mb's)
        ("/instruct", {"image": f(files, "oversized"), "instruction": "make it blue",
                       "steps": 1}, "may be at most 12 MB (--max-file-mb)"),
        # a model file over --max-file-mb reaches the import (which reads its keys), one over
        # --max-model-mb does not
        ("/concept_import", {"file": f(files, "big_model"), "name": "big"},
         "nor a LoRA"),
        ("/concept_import", {"file": f(files, "huge_model"), "name": "huge"},
         "maximum file size"),
        ("/seedselect", {"prompt": "a dog", "images": [f(files, "good")] * 21, "steps": 1},
         "the limit is 20"),
        ("/concept_import", {"file": f(files, "many_vectors"), "name": "many"},
         "50000 vectors"),
        ("/instruct", {"image": f(files, "crafted_meta"), "instruction": "make it blue",
                       "steps": 1}, "metadata"),
        # --- hires fix and upscalers: scale, names, the final size, pickled model files
        ("/txt2img", {"prompt": "ok", **SMALL, "hires_scale": 5}, "greater than maximum"),
        ("/txt2img", {"prompt": "ok", **SMALL, "hires_scale": 2, "hires_steps": 2,
                      "hires_upscaler": "R-ESRGAN 4x+"}, "unknown hires_upscaler"),
        ("/txt2img", {"prompt": "ok", "seed": 1, "steps": 1, "width": 1024, "height": 1024,
                      "hires_scale": 2.5}, "2048 px per side"),
        ("/txt2img", {"prompt": "ok", **SMALL, "hires_scale": 2, "hires_steps": 2,
                      "hires_upscaler": "pickled-esrgan"}, "weights_only=True"),
        ("/upscale", {"image": f(files, "good"), "scale": 2, "upscaler": "latent"},
         "has none"),
    ]
    return c


def test_catalogue_has_at_least_forty_cases(files):
    assert len(cases(files)) >= 40
    assert len({endpoint for endpoint, _, _ in cases(files)}) >= 9


def test_every_bad_request_gets_a_clear_error_and_the_next_request_works(client, files):
    failures = []
    for endpoint, kwargs, fragment in cases(files):
        try:
            client.predict(**kwargs, api_name=endpoint)
            failures.append(f"{endpoint} {kwargs}: no error")
        except (AppError, ValueError) as err:  # ValueError: gradio_client's own checks
            if fragment.lower() not in str(err).lower():
                failures.append(f"{endpoint}: expected {fragment!r} in {str(err)!r}")
        except Exception as err:  # noqa: BLE001 - any non-AppError is a failure to report
            failures.append(f"{endpoint}: {type(err).__name__}: {err}")
        _, info = client.predict(prompt="still serving", **SMALL, api_name="/txt2img")
        assert json.loads(info)["seed"] == 1
    assert not failures, "\n".join(failures)


def test_nan_and_inf_are_rejected_by_the_backend(studio):
    """JSON can't carry NaN to the API; the backend still rejects it for direct callers."""
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="finite"):
            studio.txt2img({"prompt": "ok", **SMALL, "guidance_scale": value})


def test_decompression_bomb_is_refused_clearly(studio, tmp_path: Path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 MP: Pillow refuses it at open
    with pytest.raises(ValueError, match="far too large"):
        studio.instruct({"image": str(bomb), "prompt": "make it blue", "steps": 1})


def test_missing_file_path_is_explained(studio, tmp_path: Path):
    with pytest.raises(ValueError, match="not found"):
        studio.instruct({"image": str(tmp_path / "nope.png"), "prompt": "make it blue",
                         "steps": 1})
