"""The AUTOMATIC1111-compatible API, driven by an unmodified third-party client (`webuiapi`
from PyPI) against a served studio on the tiny set: every route it uses, the same pixels as
the studio's own endpoint, A1111-style errors, auth, and one device queue for both APIs."""

from __future__ import annotations

import base64
import io
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import webuiapi
from PIL import Image

from tests.support.raw import call

BASE = {"seed": 5, "steps": 2, "width": 64, "height": 64, "cfg_scale": 7.5}


def small() -> dict:
    """BASE with a fresh `alwayson_scripts`: webuiapi writes ControlNet units into its default
    dict, so without one of our own a unit would carry over into the next call."""
    return {**BASE, "alwayson_scripts": {}}


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def api(app_url) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(host="127.0.0.1", port=port_of(app_url), steps=2)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), np.int16)


def photo(seed: int = 0, size: tuple[int, int] = (64, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), np.uint8))


def test_txt2img_same_pixels_as_the_studios_own_endpoint(api, client):
    result = api.txt2img(prompt="a red circle", batch_size=2, n_iter=2, **small())
    assert len(result.images) == 4 and result.info["all_seeds"] == [5, 6, 7, 8]
    assert result.parameters["prompt"] == "a red circle"
    assert "Seed: 5" in result.info["infotexts"][0]
    ours, _ = client.predict(prompt="a red circle", seed=5, steps=2, width=64, height=64,
                             guidance_scale=7.5, scheduler="Euler a", api_name="/txt2img")
    assert np.array_equal(pixels(result.images[0]), pixels(Image.open(ours)))
    assert not np.array_equal(pixels(result.images[0]), pixels(result.images[1]))


def test_img2img_with_a_mask_keeps_every_pixel_outside_it(api):
    source = photo(1)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    result = api.img2img(images=[source], mask_image=Image.fromarray(mask), prompt="a cat",
                         denoising_strength=1.0, mask_blur=4, inpaint_full_res=False,
                         **small())
    out, src = pixels(result.image), pixels(source)
    assert result.info["studio_task"] == "inpaint"
    assert np.array_equal(out[mask == 0], src[mask == 0])
    assert (out[mask > 0] != src[mask > 0]).any(-1).mean() > 0.5
    plain = api.img2img(images=[source], prompt="a cat", denoising_strength=0.5, **small())
    assert plain.info["studio_task"] == "inpaint" and plain.image.size == (64, 64)


def test_an_outpainting_canvas_client_gets_its_new_area_filled(api):
    """What openOutpaint sends: the canvas with the empty area transparent, and a mask that
    is opaque white where to paint and transparent elsewhere (A1111 reads its alpha)."""
    source = photo(2)
    init = Image.new("RGBA", (96, 64), (0, 0, 0, 0))
    init.paste(source.convert("RGBA"), (0, 0))
    mask = Image.new("RGBA", (96, 64), (0, 0, 0, 0))
    mask.paste((255, 255, 255, 255), (64, 0, 96, 64))
    result = api.img2img(images=[init], mask_image=mask, prompt="a cat",
                         denoising_strength=1.0, mask_blur=0, inpaint_full_res=False,
                         inpainting_fill=2, **{**small(), "width": 96})
    out = pixels(result.image)
    assert result.image.size == (96, 64) and result.info["studio_task"] == "inpaint"
    assert np.array_equal(out[:, :64], pixels(source))
    assert out[:, 64:].std() > 1 and (out[:, 64:] != 0).any()  # painted, not left empty


def test_a_controlnet_unit_steers_the_image(api):
    assert "controlnet-canny" in api.controlnet_model_list()
    assert "canny" in api.controlnet_module_list()
    edges = Image.new("RGB", (64, 64), "black")
    edges.paste((255, 255, 255), (20, 0, 24, 64))
    unit = webuiapi.ControlNetUnit(image=edges, module="none", model="controlnet-canny",
                                   weight=1.0, resize_mode="Just Resize")
    with_unit = api.txt2img(prompt="a cat", controlnet_units=[unit], **small())
    without = api.txt2img(prompt="a cat", **small())
    assert with_unit.info["studio_task"] == "control"
    assert not np.array_equal(pixels(with_unit.image), pixels(without.image))
    zero = webuiapi.ControlNetUnit(image=edges, module="none", model="controlnet-canny",
                                   weight=0.0, resize_mode="Just Resize")
    off = api.txt2img(prompt="a cat", controlnet_units=[zero], **small())
    assert np.abs(pixels(off.image) - pixels(without.image)).max() <= 2


def test_detect_runs_the_annotator(api):
    square = Image.new("RGB", (64, 64), "black")
    square.paste((255, 255, 255), (16, 16, 48, 48))
    result = api.controlnet_detect([square], module="canny", processor_res=64)
    edges = np.asarray(result.images[0].convert("L")) > 127
    assert 0 < edges.mean() < 0.5  # the square's outline, not everything


def test_png_info_reads_the_studios_metadata(api):
    made = api.txt2img(prompt="a blue square", **small())
    info = api.png_info(made.image)
    assert "a blue square" in info.info and "Seed: 5" in info.info


def test_progress_while_running_and_interrupt_stops_it(api, app_url):
    done = {}
    long = {**small(), "steps": 150, "width": 512, "height": 512}
    thread = threading.Thread(target=lambda: done.update(
        r=_catch(lambda: api.txt2img(prompt="a cat", **long))))
    thread.start()
    deadline, seen = time.time() + 60, {}
    while time.time() < deadline and not seen.get("sampling_step"):
        seen = api.get_progress()["state"]
        time.sleep(0.2)
    assert seen["sampling_steps"] == 150 and seen["job"] == "txt2img"
    preview = None  # the live preview of the running job, as A1111's current_image
    while time.time() < deadline and preview is None:
        preview = api.get_progress()["current_image"]
        time.sleep(0.2)
    assert preview is not None
    with Image.open(io.BytesIO(base64.b64decode(preview))) as im:
        assert im.size == (512, 512)
    # a gradio client naming the old fixed session of this API's jobs stops nothing
    for guess in ("a1111-api", "a1111-", "default"):
        assert call(app_url, "/cancel", [], session=guess) == ("complete", [False])
    step = api.get_progress()["state"]["sampling_step"]
    time.sleep(1.0)
    assert api.get_progress()["state"]["sampling_step"] > step  # still running
    assert api.interrupt()["interrupted"] is True
    thread.join(60)
    # as A1111: 200 with what there is, the interrupted image as its latest preview
    result = done["r"]
    assert not isinstance(result, RuntimeError), result
    assert len(result.images) == 1 and result.images[0].size == (512, 512)
    assert result.info["all_seeds"] == [5]
    assert api.txt2img(prompt="a cat", **small()).image.size == (64, 64)  # still serving


def _catch(fn):
    try:
        return fn()
    except RuntimeError as err:
        return err


def test_lists_and_options(api, studio):
    names = [s["name"] for s in api.get_samplers()]
    assert {"Euler a", "DPM++ 2M Karras", "DDIM", "LCM"} <= set(names)
    assert [s["name"] for s in api.get_schedulers()] == [
        "automatic", "uniform", "normal", "karras", "exponential", "beta", "sgm_uniform",
        "simple", "ddim", "align_your_steps"]
    models = api.get_sd_models()
    assert models[0]["model_name"] == "tiny" and {"tiny-xl", "toy"} <= {
        m["model_name"] for m in models}
    assert api.get_options()["sd_model_checkpoint"] == models[0]["title"]
    api.set_options({"sd_model_checkpoint": models[0]["title"]})  # the current one: fine


@pytest.mark.parametrize(("payload", "fragment"), [
    ({"sampler_name": "Turbo 9000"}, "unknown sampler_name"),
    ({"enable_hr": True, "hr_upscaler": "Latent (nearest)"}, "latent upscaler is bilinear"),
    ({"enable_hr": True, "hr_sampler_name": "DDIM"}, "hr_sampler_name"),
    ({"width": 100}, "multiple of 8"),
    ({"batch_size": 0}, "batch_size"),
    ({"alwayson_scripts": {"ControlNet": {"args": [{"image": "!!", "module": "lasers",
                                                    "model": "None"}]}}}, "lasers"),
    ({"alwayson_scripts": {"ControlNet": {"args": [{"image": "bm90IGFuIGltYWdl",
                                                    "model": "controlnet-canny"}]}}},
     "could not be read as an image"),
])
def test_bad_requests_get_a1111_style_errors(app_url, api, payload, fragment):
    import requests

    url = f"http://127.0.0.1:{port_of(app_url)}/sdapi/v1/txt2img"
    answer = requests.post(url, json={"prompt": "a cat", **BASE, **payload}, timeout=60)
    assert answer.status_code == 422 and fragment in answer.json()["detail"]
    assert api.txt2img(prompt="a cat", **small()).image.size == (64, 64)


def test_other_checkpoints_are_refused_clearly(app_url):
    import requests

    url = f"http://127.0.0.1:{port_of(app_url)}/sdapi/v1/options"
    answer = requests.post(url, json={"sd_model_checkpoint": "sdxl.safetensors"}, timeout=30)
    assert answer.status_code == 422 and "is not a model of this server" in answer.json()["detail"]


@pytest.fixture()
def serve(tiny_settings, tiny_model_set, tmp_path):
    """Serve a studio with other settings; yields a function settings -> URL."""
    from studio.backend.service import Studio
    from studio.ui.app import build_app, launch_options

    demos = []

    def start(**changes):
        settings = replace(tiny_settings, outputs_dir=tmp_path / "outputs",
                           concepts_dir=tmp_path / "concepts", **changes)
        studio = Studio(settings, model_set=tiny_model_set)
        demo = build_app(studio)
        demos.append(demo)
        _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True,
                                **launch_options(settings, studio, server_port=None,
                                                 server_name="127.0.0.1"))
        served_studios[url] = studio
        return url

    yield start
    for demo in demos:
        demo.close()


served_studios: dict = {}


def test_embeddings_and_loras_list_the_concept_library(serve, tiny_model_set, tmp_path):
    import torch
    from safetensors.torch import save_file

    url = serve()
    studio = served_studios[url]
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port_of(url), steps=2)
    assert api.get_embeddings() == {"loaded": {}, "skipped": {}} and api.get_loras() == []
    save_file({"emb_params": torch.randn(1, 32)}, str(tmp_path / "fuzzy.safetensors"))
    studio.import_concept(tmp_path / "fuzzy.safetensors", "fuzzy")
    lora = next(Path(tiny_model_set.get("lcm_lora")).glob("*.safetensors"))
    shutil.copy(lora, tmp_path / "speedy.safetensors")  # an upload, as far as the gate knows
    studio.import_concept(tmp_path / "speedy.safetensors", "speedy")
    assert list(api.get_embeddings()["loaded"]) == ["<fuzzy>"]
    assert [(x["name"], x["alias"]) for x in api.get_loras()] == [("speedy", "<speedy>")]
    with_token = api.txt2img(prompt="a <fuzzy> cat", **small()).image
    assert not np.array_equal(pixels(with_token), pixels(api.txt2img(prompt="a cat",
                                                                       **small()).image))


def test_api_auth_is_required_when_set(serve):
    import requests

    url = serve(api_auth="me:secret")
    samplers = url.rstrip("/") + "/sdapi/v1/samplers"
    assert requests.get(samplers, timeout=30).status_code == 401
    assert requests.get(samplers, auth=("me", "wrong"), timeout=30).status_code == 401
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port_of(url), username="me",
                            password="secret", steps=2)
    assert api.txt2img(prompt="a cat", **small()).image.size == (64, 64)


def test_without_api_auth_an_empty_or_odd_authorization_header_is_ignored(app_url):
    """SillyTavern and Open WebUI always send `Authorization: Basic <field>`, empty when no
    login is set: as in A1111, no credential is looked at without --api-auth."""
    import requests

    samplers = app_url.rstrip("/") + "/sdapi/v1/samplers"
    for header in ("Basic ", "Basic", "Basic !!not-base64", "Bearer abc"):
        answer = requests.get(samplers, headers={"Authorization": header}, timeout=30)
        assert answer.status_code == 200, header
    made = requests.post(app_url.rstrip("/") + "/sdapi/v1/txt2img", timeout=60,
                         headers={"Authorization": "Basic "},
                         json={"prompt": "a cat", "steps": 1, "width": 64, "height": 64})
    assert made.status_code == 200 and made.json()["images"]


def test_a_public_studio_needs_an_api_login_and_the_api_can_be_off(serve):
    import requests

    public = serve(host="0.0.0.0")  # listens beyond localhost: public
    answer = requests.get(public.replace("0.0.0.0", "127.0.0.1").rstrip("/")
                          + "/sdapi/v1/samplers", timeout=30)
    assert answer.status_code == 403 and "--api-auth" in answer.json()["detail"]
    off = serve(a1111_api=False)
    assert requests.get(off.rstrip("/") + "/sdapi/v1/samplers", timeout=30).status_code == 404


def test_both_apis_share_one_device(api, client, studio, monkeypatch):
    """A gradio job and an A1111 job never run at the same time."""
    from studio.backend.tasks import txt2img

    real, active, overlaps = txt2img.run_txt2img, [0], []

    def watched(*args, **kwargs):
        active[0] += 1
        overlaps.append(active[0])
        time.sleep(0.3)
        try:
            return real(*args, **kwargs)
        finally:
            active[0] -= 1

    monkeypatch.setattr(txt2img, "run_txt2img", watched)
    jobs = [threading.Thread(target=lambda: api.txt2img(prompt="a cat", **small()))
            for _ in range(2)]
    jobs += [threading.Thread(target=lambda: client.predict(
        prompt="a cat", seed=1, steps=2, width=64, height=64, api_name="/txt2img"))
        for _ in range(2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(120)
    assert len(overlaps) == 4 and max(overlaps) == 1
