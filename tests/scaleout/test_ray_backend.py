"""`--backend ray`: every endpoint through gradio_client on 2 CPU Ray Serve replicas (tiny
models), the same images as the local backend, progress, previews, Stop, concepts on every
replica, and a replica killed mid-job.

One local Ray cluster serves the whole module (starting one takes ~20 s on 2 cores). The
local twin is a plain Studio on the same outputs folder and concept library: regenerating a
Ray output there, with the replicas' one torch thread, must give the same pixels.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageDraw

# The browser tests of every tab, run here again against the Ray-backed studio (the page
# fixture opens `app_url`, which this module points at the Ray app).
from tests.browser.conftest import browser, page, photo  # noqa: E402, F401
from tests.browser.test_control_browser import test_sketch_strokes_then_generate  # noqa: E402, F401
from tests.browser.test_edit_browser import test_click_object_for_sam_mask_then_inpaint  # noqa: E402, F401, E501
from tests.browser.test_instruct_browser import test_edit_then_edit_the_result_again  # noqa: E402, F401, E501
from tests.browser.test_layout_browser import (  # noqa: E402, F401
    test_draw_two_boxes_with_phrases_then_generate,
)
from tests.browser.test_remix_browser import (  # noqa: E402, F401
    test_two_pictures_a_strip_of_five_and_a_text_diff,
    two_pictures,
)
from tests.browser.test_txt2img_browser import test_generate_from_prompt  # noqa: E402, F401

pytestmark = [pytest.mark.slow, pytest.mark.ray]

COMMON = {"negative_prompt": "", "seed": 5, "steps": 3, "guidance_scale": 7.5, "width": 64,
          "height": 64, "scheduler": "Euler a", "fast": False}
LONG = {"prompt": "a red circle", "seed": 1, "steps": 150, "width": 256, "height": 256}


@pytest.fixture(scope="module")
def ray_settings(tiny_settings, tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    return replace(tiny_settings, outputs_dir=root / "outputs", concepts_dir=root / "concepts",
                   backend="ray", replicas=2, replica_threads=1, preview_interval=0.0)


@pytest.fixture(scope="module")
def ray_studio(ray_settings, tiny_model_set):
    from studio.backend.serve import RayStudio

    studio = RayStudio(ray_settings, model_set=tiny_model_set)
    try:
        yield studio
    finally:
        studio.close()


@pytest.fixture(scope="module")
def twin(ray_settings, tiny_model_set):
    """A local Studio on the same folders (what the Ray outputs must equal)."""
    from studio.backend.service import Studio

    studio = Studio(replace(ray_settings, backend="local", replicas=1), model_set=tiny_model_set)
    _ = studio.concepts  # sees the concepts the replicas learn into the shared library
    return studio


@pytest.fixture(scope="module")
def app_url(ray_studio):
    """The whole UI on the Ray backend (the browser tests' page opens it)."""
    from studio.ui.app import build_app, launch_options
    from studio.ui.common import set_gpu_jobs

    demo = build_app(ray_studio, queue_size=64)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True,
                            **launch_options(ray_studio.settings, ray_studio, server_port=None))
    try:
        yield url
    finally:
        demo.close()
        set_gpu_jobs(1)


@pytest.fixture(scope="module")
def ray_client(app_url):
    return Client(app_url, verbose=False)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("ray-pictures")
    out = []
    for i, colour in enumerate(["red", "blue", "green", "orange"]):
        img = Image.new("RGB", (96, 64), "white")
        ImageDraw.Draw(img).ellipse((10 + 8 * i, 8, 60 + 8 * i, 56), fill=colour)
        out.append(str(root / f"p{i}.png"))
        img.save(out[-1])
    mask = Image.new("L", (96, 64), 0)
    ImageDraw.Draw(mask).rectangle((20, 10, 70, 50), fill=255)
    out.append(str(root / "mask.png"))
    mask.save(out[-1])
    return out


@contextlib.contextmanager
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # what each CPU replica runs with (replica_threads=1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pixels(image) -> np.ndarray:
    img = image if isinstance(image, Image.Image) else Image.open(image)
    return np.asarray(img.convert("RGB"))


def same_as_local(twin, path: str) -> dict:
    """The saved Ray output regenerates bit-identically on the local backend."""
    from studio.backend.outputs import read_metadata

    saved = Path(path)
    _, payload = read_metadata(saved)
    with one_thread():
        again = twin.regenerate(payload)
    assert np.array_equal(pixels(saved), pixels(again.image)), payload["request"]["task"]
    return payload


def generating_calls(pictures: list[str]) -> dict[str, dict]:
    first, other, mask = handle_file(pictures[0]), handle_file(pictures[1]), pictures[4]
    return {
        "/txt2img": {"prompt": "a red circle", **COMMON},
        "/prompt_edit": {"prompt": "a red circle and a blue square",
                         "edited_prompt": "a red circle and a green square", "mode": "replace",
                         "reweight": "", "cross_replace": 0.8, "self_replace": 0.4,
                         "local_blend": "", **COMMON},
        "/control": {"prompt": "a cat", **COMMON, "images": [first],
                     "units": json.dumps([{"type": "canny", "preprocess": True}])},
        "/layout": {"prompt": "a park", **COMMON, "gligen_fraction": 0.5, "boxes": json.dumps(
            [{"phrase": "a bird", "box": [0.1, 0.1, 0.5, 0.5]}])},
        "/inpaint": {"image": first, "mask": handle_file(mask), "prompt": "a hat",
                     **{k: v for k, v in COMMON.items() if k not in ("width", "height")}},
        "/outpaint": {"image": first, "prompt": "sky", "right": 16, "bottom": 8,
                      **{k: v for k, v in COMMON.items() if k not in ("width", "height")}},
        "/upscale": {"image": first, "scale": 2, "upscaler": "lanczos"},
        "/instruct": {"image": first, "instruction": "make it blue", "text_guidance": 7.5,
                      "image_guidance": 1.5, "negative_prompt": "", "seed": 5, "steps": 2,
                      "scheduler": "Euler a", "fast": False, "max_side": 128},
        "/remix": {"prompt": "", **COMMON, "images": [first, other], "weights": "[0.25, 0.75]",
                   "text_from": "", "text_to": "", "text_amount": 0.5, "image_scale": 1.0},
        "/seedselect": {"prompt": "a yellow square", "images": [handle_file(p) for p in
                                                                pictures[:3]],
                        "steps": 2, "semantic_weight": 0.5, "bootstrap": 0, "sample_steps": 2,
                        "width": 64, "height": 64, "seed": 2, "guidance_scale": 1.0},
    }


def test_every_generating_endpoint_gives_the_local_backends_image(ray_client, twin, pictures):
    for api_name, args in generating_calls(pictures).items():
        path, info = ray_client.predict(**args, api_name=api_name)
        info = json.loads(info)
        assert (twin.outputs.root / info["file"]).is_file(), api_name  # saved by the front
        payload = same_as_local(twin, str(twin.outputs.root / info["file"]))
        assert payload["request"]["task"] == api_name[1:]
    # prompt_edit's source image was saved by the front too
    _, info = ray_client.predict(**generating_calls(pictures)["/prompt_edit"],
                                 api_name="/prompt_edit")
    assert (twin.outputs.root / json.loads(info)["source"]).is_file()


def test_the_chosen_model_runs_on_the_replica(ray_client, twin, pictures):
    """The trailing `model` reaches the replica: the SDXL checkpoint draws there, the image
    regenerates bit-identically on the local backend, and the next call is the default's."""
    path, info = ray_client.predict(prompt="a red circle", **COMMON, model="tiny-xl",
                                    api_name="/txt2img")
    info = json.loads(info)
    assert info["model"] == "tiny-xl"
    same_as_local(twin, str(twin.outputs.root / info["file"]))
    _, info = ray_client.predict(prompt="a red circle", **COMMON, api_name="/txt2img")
    assert json.loads(info)["model"] == "tiny"


def test_annotators_and_sam_run_on_a_replica_with_the_local_result(ray_client, twin, pictures):
    cmap, info = ray_client.predict(image=handle_file(pictures[0]), annotator="canny",
                                    resolution=64, api_name="/annotate")
    from studio.backend.tasks.control import annotate_image

    local, _ = annotate_image(twin, pictures[0], "canny", 64)
    assert np.array_equal(pixels(cmap), pixels(local))
    mask, info = ray_client.predict(image=handle_file(pictures[0]), points="[[30, 30, 1]]",
                                    box="", api_name="/sam_mask")
    assert Image.open(mask).size == (96, 64) and "score" in json.loads(info)
    mask, info = ray_client.predict(image=handle_file(pictures[0]), text="the cat",
                                    threshold=0.0, api_name="/text_mask")
    from studio.backend.tasks.text_mask import text_mask

    with one_thread():
        local_mask, local_info = text_mask(twin, pictures[0], "the cat", 0.0)
    assert json.loads(info)["boxes"] == local_info["boxes"]
    assert np.array_equal(pixels(mask), pixels(local_mask))


def test_bad_requests_get_the_local_message_and_the_next_one_works(ray_client):
    with pytest.raises(AppError, match="prompt is empty"):
        ray_client.predict(**{**COMMON, "prompt": ""}, api_name="/txt2img")
    with pytest.raises(AppError, match="width must be a multiple of 8"):
        ray_client.predict(**{**COMMON, "prompt": "a cat", "width": 100}, api_name="/txt2img")
    _, info = ray_client.predict(prompt="a cat", **COMMON, api_name="/txt2img")
    assert json.loads(info)["seed"] == 5


def test_progress_and_previews_reach_the_front(ray_studio):
    steps, previews = [], []
    result = ray_studio.run("txt2img", {"prompt": "a cat", "seed": 2, "steps": 6, "width": 64,
                                        "height": 64},
                            progress=lambda s, t: steps.append((s, t)),
                            preview=lambda im, s, t: previews.append((im.size, s, t)))
    assert steps[-1] == (6, 6) and [s for s, _ in steps] == sorted(s for s, _ in steps)
    assert previews and all(t == 6 for _, _, t in previews)
    assert result.path is not None and result.path.is_file()


def test_stop_reaches_the_replica_running_the_job(ray_studio):
    from studio.backend.common import Cancelled

    token = ray_studio.job_token("ray-stopper")
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _catch(
        errors, lambda: ray_studio.run("txt2img", LONG, cancel=token)))
    thread.start()
    _wait(lambda: ray_studio.current_job.get("step", 0) >= 2, "the long job to start")
    t0 = time.time()
    assert ray_studio.cancel("ray-stopper") is True
    thread.join(60)
    assert errors and isinstance(errors[0], Cancelled), errors
    assert time.time() - t0 < 10  # at its next step, not after 150 steps
    assert ray_studio.run("txt2img", {**LONG, "steps": 2}).path.is_file()


def test_the_per_job_time_budget_is_kept_on_the_replica(ray_studio):
    from studio.backend.common import Cancelled, CancelToken

    token = CancelToken(deadline=time.monotonic() + 1.0, budget_s=1.0)
    with pytest.raises(Cancelled, match="limit of 1 s per job"):
        ray_studio.run("txt2img", LONG, cancel=token)


def test_stop_through_the_api(ray_client, ray_studio):
    job = ray_client.submit(**{**COMMON, **LONG}, api_name="/txt2img")
    _wait(lambda: ray_studio.current_job.get("step", 0) >= 2, "the long job to start")
    assert ray_client.predict(api_name="/cancel") is True
    with pytest.raises(AppError, match="Cancelled"):
        job.result(timeout=60)


def test_two_jobs_run_at_once_on_two_replicas(ray_studio):
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            replica = ray_studio.current_job.get("replica")
            if replica:
                seen.add(replica)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=ray_studio.run, args=(
        "txt2img", {**LONG, "steps": 60, "seed": i})) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    watcher.join()
    assert len(seen) == 2  # both replicas took jobs


def test_the_queue_runs_as_many_api_jobs_at_once_as_there_are_replicas(app_url, ray_studio):
    clients = [Client(app_url, verbose=False) for _ in range(3)]
    jobs = [c.submit(**{**COMMON, **LONG, "seed": i}, api_name="/txt2img")
            for i, c in enumerate(clients)]
    _wait(lambda: ray_studio.in_flight == 2, "two jobs running at once")
    time.sleep(0.5)
    assert ray_studio.in_flight == 2  # the third waits in gradio's queue for a replica
    assert [j.status().code.name for j in jobs].count("IN_QUEUE") == 1
    for c in clients:
        c.predict(api_name="/cancel")
    for j in jobs:
        with pytest.raises(AppError, match="Cancelled"):
            j.result(timeout=60)


def test_the_a1111_api_runs_on_the_replicas(app_url, ray_client):
    import base64
    import io

    import httpx

    port = app_url.rstrip("/").rsplit(":", 1)[1]
    body = {"prompt": "a red circle", "seed": 5, "steps": 2, "width": 64, "height": 64,
            "cfg_scale": 7.5}
    reply = httpx.post(f"http://127.0.0.1:{port}/sdapi/v1/txt2img", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    image = Image.open(io.BytesIO(base64.b64decode(reply.json()["images"][0])))
    ours, _ = ray_client.predict(prompt="a red circle", **{**COMMON, "steps": 2},
                                 api_name="/txt2img")
    assert np.array_equal(pixels(image), pixels(ours))


def test_a_concept_learned_once_works_on_every_replica(ray_client, ray_studio, twin, pictures):
    name = f"ray-ti-{os.getpid()}"
    _, info = ray_client.predict(
        name=name, images=[handle_file(p) for p in pictures[:3]], method="textual_inversion",
        steps=2, resolution=64, initializer="cat", seed=1, preview_steps=2,
        api_name="/concept_train")
    assert json.loads(info)["concept"]["token"] == f"<{name}>"
    assert name in [c["name"] for c in ray_client.predict(api_name="/concepts")]
    req = {"prompt": f"a photo of <{name}>", "seed": 4, "steps": 2, "width": 64, "height": 64}
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(ray_studio.run("txt2img", req)))
               for _ in range(4)]  # both replicas get some
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    with one_thread():
        local = twin.run("txt2img", req)
    assert len(results) == 4
    assert all(np.array_equal(pixels(r.image), pixels(local.image)) for r in results)


def test_concept_import_goes_through_a_replica(ray_client, twin, tmp_path):
    import torch
    from safetensors.torch import save_file

    dim = twin.registry.component("text_encoder").get_input_embeddings().embedding_dim
    path = tmp_path / "ray-import.safetensors"
    save_file({"emb_params": torch.randn(2, dim)}, str(path))
    info = ray_client.predict(file=handle_file(str(path)), name=f"ray-imp-{os.getpid()}",
                              api_name="/concept_import")
    assert json.loads(info)["method"] == "textual_inversion"
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not weights")
    with pytest.raises(AppError):
        ray_client.predict(file=handle_file(str(bad)), name="ray-bad", api_name="/concept_import")


def test_history_lists_the_ray_outputs(ray_client):
    items = ray_client.predict(limit=5, query="", offset=0, api_name="/history")
    assert items and all(i["file"].endswith(".png") for i in items)


def test_a_killed_replica_gives_a_clear_error_and_the_next_request_works(ray_studio):
    """Last in the module: Serve restarts the replica, which takes a few seconds."""
    from studio.backend.common import StudioError

    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _catch(
        errors, lambda: ray_studio.run("txt2img", {**LONG, "seed": 9})))
    thread.start()
    _wait(lambda: ray_studio.current_job.get("step", 0) >= 2, "the long job to start")
    os.kill(ray_studio.current_job["replica"], signal.SIGKILL)
    thread.join(60)
    assert errors and isinstance(errors[0], StudioError), errors
    assert "worker running this job stopped" in str(errors[0])
    for seed in range(3):  # the other replica, then the restarted one
        assert ray_studio.run("txt2img", {**LONG, "steps": 2, "seed": seed}).path.is_file()


def _catch(errors: list[BaseException], fn) -> None:
    try:
        fn()
    except BaseException as err:  # noqa: BLE001 - the test inspects it
        errors.append(err)


def _wait(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
