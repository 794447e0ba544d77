"""Server files stay private: every way a client can name a file by path is refused.

Raw HTTP payloads name a file of the server's disk (outside the uploads and the outputs) as
the image of every endpoint that takes one, with and without gradio's `meta` field (gradio
checks the upload folder only when `meta` is there). A crafted PNG's stored request names such
a file for regenerating. Each is refused with a clear message, the file's pixels never come
back, and the next call works.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from studio.backend.requests import RequestError
from tests.support.raw import call, fn_index, join, payload

SMALL = {"prompt": "a cat", "steps": 1, "width": 64, "height": 64, "seed": 1}


@pytest.fixture(scope="module")
def secret() -> str:
    """An image on the server's disk that no client was given (outside every allowed
    folder: not an upload, not an output, not the test's own temp folder)."""
    folder = Path(tempfile.mkdtemp(prefix="studio-secret-"))
    path = folder / "secret.png"
    Image.fromarray(np.full((64, 64, 3), (13, 200, 77), np.uint8)).save(path)
    return str(path)


def file_value(path: str, meta: bool) -> dict:
    value = {"path": path}
    if meta:
        value["meta"] = {"_type": "gradio.FileData"}
    return value


def attacks(client, path: str, meta: bool) -> list[tuple[str, list]]:
    f = file_value(path, meta)
    unit = json.dumps([{"type": "canny", "preprocess": False}])
    box = json.dumps([{"phrase": "a cat", "box": [0.1, 0.1, 0.5, 0.5]}])
    return [
        ("/annotate", payload(client, "/annotate", image=f, annotator="canny")),
        ("/control", payload(client, "/control", images=[f], units=unit, **SMALL)),
        ("/control", payload(client, "/control", images=[f], units=unit, init_image=f, **SMALL)),
        ("/layout", payload(client, "/layout", boxes=box, image=f, mode="inside_boxes",
                            **SMALL)),
        ("/sam_mask", payload(client, "/sam_mask", image=f, points="[[5, 5, 1]]", box="")),
        ("/inpaint", payload(client, "/inpaint", image=f, mask=f, **SMALL)),
        ("/instruct", payload(client, "/instruct", image=f, instruction="make it red",
                              steps=1)),
        ("/concept_train", payload(client, "/concept_train", name="stolen", images=[f] * 3,
                                   steps=1, preview_steps=0, resolution=64)),
        ("/concept_import", payload(client, "/concept_import", file=f, name="stolen")),
        ("/seedselect", payload(client, "/seedselect", images=[f] * 3, steps=1, width=64,
                                height=64, prompt="a cat")),
    ]


# Endpoints whose file inputs gradio hands over unchecked (gr.Image, raw payloads): the
# studio's file gate refuses those, with its message. gr.File inputs are refused by gradio
# itself (a generic error: gradio does not send its exception text to clients).
GATED = {"/layout", "/sam_mask", "/inpaint", "/instruct"}


@pytest.mark.parametrize("meta", [False, True], ids=["no-meta", "with-meta"])
def test_raw_path_payloads_are_refused_by_every_endpoint(client, app_url, secret, meta):
    failures = []
    for api, data in attacks(client, secret, meta):
        kind, answer = call(app_url, api, data)
        text = json.dumps(answer)
        if kind not in ("error", "refused"):
            failures.append(f"{api}: accepted a server path ({text[:200]})")
        elif api in GATED and not meta and "named by a path" not in text:
            failures.append(f"{api}: refused without saying why: {text[:200]}")
        # and the server keeps serving
        _, info = client.predict(**SMALL, api_name="/txt2img")
        assert json.loads(info)["seed"] == 1
    assert failures == []


def crafted_png(folder: Path, request: dict) -> Path:
    path = folder / "crafted.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("studio_request", json.dumps({"request": request}))
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return path


@pytest.mark.parametrize("stored", ["secret", "../../secret", "absolute outside"])
def test_regenerating_a_crafted_png_never_reads_the_named_file(studio, tmp_path, secret,
                                                               stored):
    name = {"secret": secret, "absolute outside": secret,
            "../../secret": "../../" + Path(secret).relative_to("/").as_posix()}[stored]
    request = {"task": "instruct", "image": name, "prompt": "make it red", "steps": 1,
               "seed": 1}
    with pytest.raises(RequestError, match="outside the outputs folder"):
        studio.regenerate(crafted_png(tmp_path, request))
    control = {"task": "control", **SMALL, "units": [{"type": "canny", "image": name}]}
    with pytest.raises(RequestError, match="outside the outputs folder"):
        studio.regenerate(crafted_png(tmp_path, control))
    assert studio.txt2img(SMALL).info["seed"] == 1


def test_png_info_regenerate_refuses_a_crafted_png(served, client, tmp_path, secret):
    """Through the PNG info tab's Regenerate, as the browser sends it."""
    demo, url = served
    crafted = crafted_png(tmp_path, {"task": "inpaint", "image": secret, "mask": secret,
                                     "prompt": "x", "steps": 1, "seed": 1})
    # the crafted PNG as an upload (in gradio's upload folder), then Regenerate
    upload = Path(demo.GRADIO_CACHE) / f"upload-{tmp_path.name}" / "crafted.png"
    upload.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(crafted, upload)
    index = fn_index(demo, fn_name="regenerate")
    kind, answer = join(url, index, [{"path": str(upload), "meta": {"_type": "gradio.FileData"}}])
    assert kind == "error" and "outside the outputs folder" in json.dumps(answer)
    _, info = client.predict(**SMALL, api_name="/txt2img")
    assert json.loads(info)["seed"] == 1


def test_seedselect_variants_come_from_the_server_not_the_browser(served, secret):
    """The variants gallery is filled from a server-side state: a forged value sent for it
    is ignored."""
    demo, url = served
    index = next(i for i, fn in demo.fns.items()
                 if getattr(fn.fn, "__name__", "") == "<lambda>"
                 and [type(c).__name__ for c in fn.inputs] == ["State"]
                 and [getattr(c, "label", "") for c in fn.outputs] == ["Bootstrap variants"])
    kind, answer = join(url, index, [[secret]])
    assert kind == "complete" and answer == [[]]
