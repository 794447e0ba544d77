"""A model's first use downloads it, as for a new user: a studio launched on the real SD1.5
repo ids against a Hub served locally (`HF_ENDPOINT`, tests/support/fakehub.py) shows the
download's progress in the job's progress while it fetches the weights, generates, and a
gated repository's refusal says how to log in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from studio.backend.models.families.sd15 import MODEL_SET as SD15
from tests.api.test_launch import ROOT, free_port
from tests.support.fakehub import FakeHub, serving

pytestmark = pytest.mark.slow


def started(url: str, proc: subprocess.Popen) -> Client:
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"launch.py exited early:\n{proc.stdout.read()}")
        try:
            return Client(url, verbose=False)
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(1)
    raise AssertionError("launch.py did not start serving in time")


def test_first_use_downloads_with_progress_and_a_gated_repo_says_how_to_log_in(
        tiny_model_set, model_cache, tmp_path):
    hub = FakeHub({SD15.base: Path(tiny_model_set.base)}, gated=(SD15.get("instruct"),),
                  delay=0.02, chunk=16 * 1024)
    with serving(hub) as endpoint:
        port = free_port()
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "0",
               "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf"),
               "HF_HUB_DISABLE_TELEMETRY": "1"}
        env.pop("HF_HUB_CACHE", None)
        env.pop("HF_TOKEN", None)
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "launch.py"), "--models", "sd15", "--port", str(port),
             "--cache-dir", str(model_cache), "--outputs-dir", str(tmp_path / "out"),
             "--no-previews"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            client = started(f"http://127.0.0.1:{port}/", proc)
            job = client.submit(prompt="a red circle", seed=2, steps=2, width=64, height=64,
                                api_name="/txt2img")
            seen = []
            while not job.done():
                status = job.status()
                seen += [u for u in (status.progress_data or []) if u]
                time.sleep(0.05)
            path, info = job.result()
            assert json.loads(info)["model"] == SD15.base
            assert "Model: " + SD15.base in Image.open(path).text["parameters"]
            downloads = [u for u in seen if (u.unit or "").lower() == "b"
                         or ".safetensors" in (u.desc or "")]
            assert downloads, f"no download progress among {seen[:5]}"
            assert any(f"/{SD15.base}/resolve/" in r for r in hub.requests)

            with pytest.raises(AppError) as err:
                client.predict(image=handle_file(path), instruction="make it blue", steps=2,
                               api_name="/instruct")
            message = str(err.value)
            assert "gated repository" in message and "HF_TOKEN" in message
            assert SD15.get("instruct") in message
        finally:
            proc.terminate()
            proc.wait(timeout=30)
