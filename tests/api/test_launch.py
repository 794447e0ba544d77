"""`python launch.py` as a newcomer runs it: serves, answers /txt2img, metadata regenerates."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_launch_tiny_serves_txt2img_with_metadata(model_cache, tmp_path, studio):
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "--models", "tiny", "--port", str(port),
         "--cache-dir", str(model_cache), "--outputs-dir", str(tmp_path / "out")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 180
        client = None
        while time.time() < deadline and client is None:
            if proc.poll() is not None:
                raise AssertionError(f"launch.py exited early:\n{proc.stdout.read()}")
            try:
                client = Client(url, verbose=False)
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(1)
        assert client is not None, "launch.py did not start serving in time"
        path, info = client.predict(prompt="a red circle", seed=4, steps=2, width=64,
                                    height=64, api_name="/txt2img")
        assert json.loads(info)["seed"] == 4
        img = Image.open(path)
        assert "Seed: 4" in img.text["parameters"]
        # the stored request, re-run in another process (the test's studio), gives the same pixels
        again = studio.regenerate(json.loads(img.text["studio_request"]))
        assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(again.image))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_auto_falls_back_to_builtin_models_with_a_banner(model_cache, tmp_path, monkeypatch):
    import huggingface_hub

    from studio.backend.models.builtin import resolve_model_set
    from studio.backend.service import Studio
    from studio.settings import Settings

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    settings = Settings(models="auto", offline=True, cache_dir=model_cache,
                        outputs_dir=tmp_path)
    model_set = resolve_model_set(settings)
    assert model_set.name == "toy" and model_set.offline_models  # the trained toy world
    assert model_set.native_size == 64
    banner = Studio(settings, model_set=model_set).banner
    assert "Offline mode" in banner and "--models sd15" in banner and "toy" in banner


def test_auto_falls_back_to_tiny_without_the_toy_models(model_cache, tmp_path, monkeypatch):
    import huggingface_hub

    from studio.backend.models import builtin
    from studio.backend.models.builtin import resolve_model_set
    from studio.settings import Settings

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(builtin, "TOY_DIR", tmp_path / "no-toy")
    settings = Settings(models="auto", offline=True, cache_dir=model_cache,
                        outputs_dir=tmp_path)
    assert resolve_model_set(settings).name == "tiny"
    with pytest.raises(FileNotFoundError, match="toy models are missing"):
        resolve_model_set(Settings(models="toy", offline=True, cache_dir=model_cache,
                                   outputs_dir=tmp_path))


def test_auto_uses_sd15_when_its_weights_are_cached(model_cache, tmp_path, monkeypatch):
    import huggingface_hub

    from studio.backend.models.builtin import resolve_model_set
    from studio.backend.service import Studio
    from studio.settings import Settings

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda *a, **k: "/cache/model_index.json")
    settings = Settings(models="auto", offline=True, cache_dir=model_cache,
                        outputs_dir=tmp_path)
    model_set = resolve_model_set(settings)
    assert model_set.name == "sd15"
    assert model_set.base == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert Studio(settings, model_set=model_set).banner is None  # nothing loads yet


def test_compile_is_off_on_zerogpu_where_start_up_has_no_gpu(monkeypatch, tmp_path):
    import launch
    from studio.backend import service
    from studio.ui import app

    seen = {}

    class Stop(Exception):
        pass

    def fake_studio(settings):
        seen["compile"] = settings.compile
        raise Stop

    monkeypatch.setattr(service, "Studio", fake_studio)
    monkeypatch.setattr(app, "build_app", lambda *a, **k: None)
    argv = ["--models", "tiny", "--compile", "--outputs-dir", str(tmp_path)]
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    with pytest.raises(Stop):
        launch.main(argv)
    assert seen["compile"] is False
    monkeypatch.delenv("SPACES_ZERO_GPU")
    with pytest.raises(Stop):
        launch.main(argv)
    assert seen["compile"] is True  # elsewhere the flag holds
