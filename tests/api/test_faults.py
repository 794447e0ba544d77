"""Faults: missing weights offline, out-of-memory inside a pipeline, cancelling a long run."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError

OK = {"prompt": "a red circle", "seed": 3, "steps": 2, "width": 64, "height": 64}


@pytest.fixture()
def broken_client(tiny_settings, tiny_model_set, tmp_path):
    """A studio whose base model is neither cached nor reachable (offline)."""
    from studio.backend.service import Studio
    from studio.ui.app import build_app

    missing = tiny_model_set.with_repos(base="example-org/sd-not-downloaded")
    demo = build_app(Studio(replace(tiny_settings, outputs_dir=tmp_path), model_set=missing))
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        yield Client(url, verbose=False)
    finally:
        demo.close()


def test_missing_weights_offline_give_a_message_naming_model_and_fix(broken_client):
    with pytest.raises(AppError) as info:
        broken_client.predict(**OK, api_name="/txt2img")
    msg = str(info.value)
    assert "example-org/sd-not-downloaded" in msg
    assert "huggingface-cli download" in msg and "--base-model" in msg


@pytest.mark.slow
def test_out_of_memory_frees_models_and_next_call_succeeds(client, studio, monkeypatch):
    from studio.backend.tasks import txt2img

    real = txt2img.base_pipeline
    calls = {"n": 0}

    class Exploding:
        def __init__(self, pipe):
            self.pipe = pipe

        def __getattr__(self, name):
            return getattr(self.pipe, name)

        def __setattr__(self, name, value):
            if name == "pipe":
                object.__setattr__(self, name, value)
            else:
                setattr(self.pipe, name, value)

        def __call__(self, *a, **k):
            calls["n"] += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(txt2img, "base_pipeline", lambda registry: Exploding(real(registry)))
    drops_before = studio.registry.stats["drop"] + studio.registry.stats["offload"]
    with pytest.raises(AppError, match="Out of memory while generating"):
        client.predict(**OK, api_name="/txt2img")
    assert calls["n"] == 1
    assert studio.registry.stats["drop"] + studio.registry.stats["offload"] > drops_before
    monkeypatch.setattr(txt2img, "base_pipeline", real)
    _, info = client.predict(**OK, api_name="/txt2img")
    assert json.loads(info)["seed"] == 3


def test_cancel_frees_the_worker(app_url):
    client = Client(app_url, verbose=False)
    long = {**OK, "steps": 150, "width": 512, "height": 512, "seed": 1}
    job = client.submit(**long, api_name="/txt2img")
    deadline = time.time() + 60
    while job.status().code.name not in ("PROCESSING", "PROGRESS") and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    t0 = time.time()
    assert client.predict(api_name="/cancel") is True
    with pytest.raises(AppError, match="Cancelled"):
        job.result(timeout=60)
    assert time.time() - t0 < 20  # stopped at the next step, not after 150 steps
    # the worker is free: a normal request goes through at once
    _, info = client.predict(**OK, api_name="/txt2img")
    assert json.loads(info)["seed"] == 3
