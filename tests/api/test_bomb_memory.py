"""A decompression bomb (a small PNG that decodes to 144 megapixels, under Pillow's own
default limit) sent to every endpoint that takes an image raises the server's peak memory by
less than 300 MB: it is refused from its header, before a pixel is decoded."""

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

from .test_launch import ROOT, free_port

pytestmark = pytest.mark.slow
SMALL = {"prompt": "a cat", "seed": 1, "steps": 1, "width": 64, "height": 64}


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


@pytest.fixture(scope="module")
def server(model_cache, tmp_path_factory):
    port, work = free_port(), tmp_path_factory.mktemp("bomb-server")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "--models", "tiny", "--port", str(port),
         "--cache-dir", str(model_cache), "--outputs-dir", str(work / "out")],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client, deadline = None, time.time() + 180
    while client is None and time.time() < deadline:
        try:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(1)
    try:
        yield proc, client
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_bomb_under_a_megabyte_is_refused_without_decoding_it(server, tmp_path):
    proc, client = server
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb)  # 144 MP: Pillow's default limit is 179 MP
    assert bomb.stat().st_size < 1_000_000
    client.predict(**SMALL, api_name="/txt2img")  # warm: models loaded, buffers allocated
    before = peak_rss_mb(proc.pid)
    f = handle_file(str(bomb))
    unit = json.dumps([{"type": "canny", "preprocess": True}])
    box = json.dumps([{"phrase": "a cat", "box": [0.1, 0.1, 0.5, 0.5]}])
    calls = [
        ("/instruct", {"image": f, "instruction": "make it red", "steps": 1}),
        ("/layout", {**SMALL, "boxes": box, "image": f, "mode": "inside_boxes"}),
        ("/inpaint", {**SMALL, "image": f, "mask": f}),
        ("/sam_mask", {"image": f, "points": "[[5, 5, 1]]", "box": ""}),
        ("/annotate", {"image": f, "annotator": "canny"}),
        ("/control", {**SMALL, "images": [f], "units": unit}),
        ("/seedselect", {"prompt": "a cat", "images": [f] * 3, "steps": 1}),
        ("/concept_train", {"name": "bomb", "images": [f] * 3, "steps": 1}),
    ]
    for api, kwargs in calls:
        with pytest.raises(AppError, match="far too large|could not be read"):
            client.predict(**kwargs, api_name=api)
    assert peak_rss_mb(proc.pid) - before < 300
    _, info = client.predict(**SMALL, api_name="/txt2img")
    assert json.loads(info)["seed"] == 1
