"""Deploying publicly: budgets by default, a loud warning without a login, ZeroGPU's short GPU
windows sized per request, and errors that never show the server's internals."""

from __future__ import annotations

import inspect
import json
import logging
import sys
import types
from dataclasses import replace

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from studio.settings import PUBLIC_DEFAULTS, Settings

SMALL = {"prompt": "a red circle", "seed": 3, "steps": 2, "width": 64, "height": 64}


def test_public_studios_get_budgets_and_local_ones_none(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    local = Settings(models="tiny")
    assert not local.public and local.max_job_work == 0 and local.max_jobs_per_session == 0
    for public in (Settings(models="tiny", host="0.0.0.0"), Settings(models="tiny", share=True)):
        assert public.public
        assert {k: getattr(public, k) for k in PUBLIC_DEFAULTS} == PUBLIC_DEFAULTS
    monkeypatch.setenv("SPACE_ID", "someone/studio")
    assert Settings(models="tiny").public
    assert Settings(models="tiny", max_job_work=0).max_job_work == 0  # explicit wins


def test_listening_beyond_localhost_without_a_login_is_flagged(tiny_settings,
                                                              tiny_model_set):
    from studio.backend.service import Studio

    exposed = Studio(replace(tiny_settings, host="0.0.0.0"), model_set=tiny_model_set)
    assert "without a login" in exposed.exposure_warning and "--auth" in exposed.exposure_warning
    assert exposed.shared_library
    guarded = Studio(replace(tiny_settings, host="0.0.0.0", auth="me:pw"),
                     model_set=tiny_model_set)
    assert guarded.exposure_warning is None
    assert Studio(tiny_settings, model_set=tiny_model_set).exposure_warning is None


def test_public_page_shows_the_warning_and_the_shared_library_note(tiny_settings,
                                                                   tiny_model_set):
    from studio.backend.service import Studio
    from studio.ui.app import build_app

    demo = build_app(Studio(replace(tiny_settings, host="0.0.0.0"), model_set=tiny_model_set))
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"exposure-banner", "concepts-shared-note"} <= ids


@pytest.fixture()
def zerogpu(monkeypatch, tiny_settings, tiny_model_set, tmp_path):
    """The app as on a ZeroGPU Space, with a stand-in `spaces` module that records the
    window each call asks for."""
    from studio.backend.service import Studio
    from studio.ui.app import build_app, launch_options

    asked: list[float] = []
    fake = types.ModuleType("spaces")

    def gpu(fn=None, duration=None):
        def wrap(inner):
            def ask(*args, **kwargs):
                asked.append(duration(*args, **kwargs) if callable(duration) else 60)

            # like spaces.GPU, a generator function (a streaming handler) stays one
            if inspect.isgeneratorfunction(inner):
                def called(*args, **kwargs):
                    ask(*args, **kwargs)
                    yield from inner(*args, **kwargs)
            else:
                def called(*args, **kwargs):
                    ask(*args, **kwargs)
                    return inner(*args, **kwargs)
            called.__wrapped__ = inner
            return called
        return wrap(fn) if fn is not None else wrap

    fake.GPU = gpu
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    studio = Studio(replace(tiny_settings, outputs_dir=tmp_path, max_job_seconds=120.0),
                    model_set=tiny_model_set)
    demo = build_app(studio)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True,
                            **launch_options(studio.settings, server_port=None))
    try:
        yield Client(url, verbose=False), asked, studio
    finally:
        demo.close()


@pytest.mark.slow
def test_zerogpu_windows_follow_each_request(zerogpu):
    client, asked, _ = zerogpu
    client.predict(**SMALL, api_name="/txt2img")
    client.predict(**{**SMALL, "width": 512, "height": 512, "steps": 50}, api_name="/txt2img")
    small, large = asked
    assert 15 <= small < large <= 120  # sized by the work, within the per-job budget


@pytest.mark.slow
def test_zerogpu_loads_the_models_outside_the_gpu_window(zerogpu):
    _, _, studio = zerogpu
    studio.preload()  # launch.py does this at start-up on ZeroGPU
    loads = studio.registry.stats["load"]
    assert studio.registry.key("unet") in studio.registry.loaded_keys()
    studio.txt2img(SMALL)
    assert studio.registry.stats["load"] == loads  # the first request loads nothing


def test_unexpected_errors_show_an_id_not_the_exception(client, studio, monkeypatch, caplog):
    from studio.backend.tasks import txt2img

    def boom(*args, **kwargs):
        raise RuntimeError("CUDA error at /opt/secret/path/model.safetensors: device-side")

    monkeypatch.setattr(txt2img, "run_txt2img", boom)
    with caplog.at_level(logging.ERROR), pytest.raises(AppError) as err:
        client.predict(**SMALL, api_name="/txt2img")
    message = str(err.value)
    assert "Internal error (id " in message
    assert "/opt/secret" not in message and "CUDA" not in message
    error_id = message.split("(id ")[1].split(")")[0]
    assert error_id in caplog.text and "/opt/secret/path" in caplog.text  # in the log only
    monkeypatch.undo()
    assert json.loads(client.predict(**SMALL, api_name="/txt2img")[1])["seed"] == 3
