"""Live previews through the API: `submit()` streams them, `predict()` returns only the final
result, unchanged."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

REQ = {"prompt": "a red circle", "seed": 5, "steps": 8, "width": 64, "height": 64,
       "scheduler": "Euler a"}


@pytest.fixture()
def eager(studio, monkeypatch):
    monkeypatch.setattr(studio, "settings", replace(studio.settings, preview_interval=0.0))
    return studio


def test_submit_streams_previews_then_the_final_result(client, eager):
    job = client.submit(**REQ, api_name="/txt2img")
    final = job.result()
    outputs = job.outputs()
    previews = [(path, json.loads(info)) for path, info in outputs[:-1]]
    assert previews, "no preview was streamed"
    for path, info in previews:
        assert set(info) == {"preview"} and 1 <= info["preview"]["step"] < REQ["steps"]
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == (64, 64)  # previews are light
    assert outputs[-1] == final
    info = json.loads(final[1])
    assert "preview" not in info and info["seed"] == REQ["seed"]
    with Image.open(final[0]) as im:
        assert im.format == "PNG" and "studio_request" in im.info  # the saved file itself

    again = client.predict(**REQ, api_name="/txt2img")  # predict: the final result only
    assert "preview" not in json.loads(again[1])
    with Image.open(final[0]) as a, Image.open(again[0]) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_a_prompt_edit_streams_previews_too(client, eager):
    job = client.submit(**{**REQ, "edited_prompt": "a blue circle", "mode": "replace",
                           "reweight": "", "cross_replace": 0.8, "self_replace": 0.4,
                           "local_blend": ""}, api_name="/prompt_edit")
    job.result()
    assert any('"preview"' in info for _, info in job.outputs()[:-1])


def test_an_error_after_previews_is_still_a_clear_error(client, eager, monkeypatch):
    from gradio_client.exceptions import AppError

    from studio.backend import previews

    calls = {"n": 0}
    original = previews.Previewer.step

    def failing(self, step, total, latents):
        original(self, step, total, latents)
        calls["n"] += 1
        if calls["n"] == 4:
            raise MemoryError("simulated")  # a failure in the middle of the run

    monkeypatch.setattr(previews.Previewer, "step", failing)
    with pytest.raises(AppError, match="Internal error"):
        client.predict(**REQ, api_name="/txt2img")
    monkeypatch.setattr(previews.Previewer, "step", original)
    assert json.loads(client.predict(**REQ, api_name="/txt2img")[1])["seed"] == REQ["seed"]
