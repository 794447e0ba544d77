"""File references a client names by path are refused before gradio touches the file: every
image-taking endpoint and the events without an API name, with and without `meta`, for a
secret image (RGBA and greyscale, which gradio would convert and re-save into its cache), a
missing path, the server's own pipes (`/proc/self/fd/*`), a FIFO and a link out of the outputs
folder. The refusal reads the same whether the file exists or not, comes back at once (a pipe
opened for reading would hang the worker), and the next request works."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.api.test_exposure import SMALL, attacks
from tests.support.raw import call, fn_index, join, payload

REFUSED = ("A file in this request was named by a path ('{}'): the server opens only files "
           "uploaded to it or made by it. Upload the file instead.")


def message(answer: object) -> object:
    """The error text of a refused call (gradio sends `{"error": text, ...}` or the text)."""
    return answer.get("error") if isinstance(answer, dict) else answer


@pytest.fixture(scope="module")
def places(studio) -> Iterator[dict[str, str]]:
    """Paths outside every folder the server owns (and the tests' own temp folder, which the
    tests as a script may name), all named `secret.png` but the pipe."""
    here = Path(tempfile.mkdtemp(prefix="studio-secret-files-"))
    rgba = here / "rgba" / "secret.png"
    grey = here / "grey" / "secret.png"
    for path, mode in ((rgba, "RGBA"), (grey, "L")):
        path.parent.mkdir()
        Image.fromarray(np.full((64, 64, len(mode)), 77, np.uint8).squeeze()).convert(
            mode).save(path)
    fifo = here / "fifo" / "secret.png"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    link = studio.outputs.root / "link-out" / "secret.png"  # inside the outputs: links out
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(rgba)
    read_end, write_end = os.pipe()  # a pipe of this (the server's) process
    yield {"rgba": str(rgba), "grey": str(grey), "missing": str(here / "gone" / "secret.png"),
           "fifo": str(fifo), "link": str(link), "pipe": f"/proc/self/fd/{read_end}",
           "relative": "../../../../etc/secret.png"}
    os.close(read_end)
    os.close(write_end)
    link.unlink()
    shutil.rmtree(here, ignore_errors=True)


@pytest.mark.slow  # 10 endpoints x 7 paths x 2: about 20 s
@pytest.mark.parametrize("meta", [False, True], ids=["no-meta", "with-meta"])
def test_every_endpoint_refuses_every_named_path_alike_and_at_once(client, app_url, places,
                                                                    meta):
    failures = []
    for kind, path in places.items():
        expected = REFUSED.format(Path(path).name)
        for api, data in attacks(client, path, meta):
            started = time.monotonic()
            outcome, answer = call(app_url, api, data, timeout=30)
            took = time.monotonic() - started
            if outcome != "error" or message(answer) != expected:
                failures.append(f"{kind} {api}: {outcome} {json.dumps(answer)[:160]}")
            elif took > 10:
                failures.append(f"{kind} {api}: took {took:.1f} s")
    assert failures == []
    _, info = client.predict(**SMALL, api_name="/txt2img")  # the server keeps serving
    assert json.loads(info)["seed"] == 1


def test_an_event_without_an_api_name_never_copies_a_server_image_out(served, client, places):
    """The Control tab's "Preview control map" (by `fn_index`, as the browser calls it) with
    a non-RGB server image as a ready map: refused; its pixels never come back."""
    demo, url = served
    index = fn_index(demo, fn_name="preview")
    for kind in ("rgba", "grey", "fifo", "pipe"):
        ref = {"path": places[kind], "meta": {"_type": "gradio.FileData"}}
        outcome, answer = join(url, index, ["canny", "image", None, ref, True, 64], timeout=30)
        assert outcome == "error", kind
        assert message(answer) == REFUSED.format(Path(places[kind]).name), kind
    _, info = client.predict(**SMALL, api_name="/txt2img")
    assert json.loads(info)["seed"] == 1


def test_uploads_and_the_servers_own_results_still_pass(client, tmp_path):
    """gradio_client uploads first and sends the upload's path with `meta`; a result the
    server made goes back in (what "Send to" does)."""
    from gradio_client import handle_file

    picture = tmp_path / "mine.png"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(picture)
    path, info = client.predict(image=handle_file(str(picture)), instruction="make it red",
                                steps=1, api_name="/instruct")
    assert json.loads(info)["task"] == "instruct"
    again, _ = client.predict(image=handle_file(path), instruction="make it blue", steps=1,
                              api_name="/instruct")
    assert Path(again).is_file()


def test_deeply_nested_values_are_refused_with_a_message(app_url, client):
    nested: list = []
    for _ in range(200):
        nested = [nested]
    data = payload(client, "/txt2img", excite_words=nested, **SMALL)
    outcome, answer = call(app_url, "/txt2img", data, timeout=30)
    assert outcome == "error" and "nested more than 32 levels" in json.dumps(answer)
