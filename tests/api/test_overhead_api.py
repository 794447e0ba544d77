"""Results through gradio_client arrive as the saved PNG itself (never re-encoded), and a
client that skips the download gets a URL serving those same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

OK = {"prompt": "a red circle", "seed": 5, "steps": 2, "width": 64, "height": 64}


def saved_bytes(studio, info: str) -> bytes:
    return (studio.outputs.root / json.loads(info)["file"]).read_bytes()


def test_the_downloaded_result_is_the_saved_png_byte_for_byte(client, studio):
    path, info = client.predict(**OK, api_name="/txt2img")
    assert Path(path).read_bytes() == saved_bytes(studio, info)


def test_a_client_without_downloads_gets_a_url_to_the_same_png(app_url, studio):
    from gradio_client import Client

    fast_client = Client(app_url, verbose=False, download_files=False)
    image, info = fast_client.predict(**OK, api_name="/txt2img")
    assert image["url"].startswith(app_url.rstrip("/"))
    response = httpx.get(image["url"])
    assert response.status_code == 200
    assert response.content == saved_bytes(studio, info)
