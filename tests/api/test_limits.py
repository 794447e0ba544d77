"""One visitor must not hold the GPU: work and time budgets per job, jobs per session, and a
Stop that reaches every job of its session (running, waiting, in every tab)."""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError, ValidationError

from tests.support.raw import call, fn_index, join, payload, run
from tests.support.serve import launch_local

pytestmark = pytest.mark.slow  # long jobs stopped by budgets and Stop: ~40 s
SMALL = {"prompt": "a red circle", "seed": 3, "steps": 2, "width": 64, "height": 64}
LONG = {**SMALL, "steps": 150, "width": 512, "height": 512}


@pytest.fixture(scope="module")
def limited(tiny_settings, tiny_model_set, tmp_path_factory):
    """A studio with a public demo's budgets (small ones, so tests run fast)."""
    from studio.backend.service import Studio
    from studio.ui.app import build_app, launch_options

    settings = replace(tiny_settings, outputs_dir=tmp_path_factory.mktemp("limited"),
                       max_job_work=4.0, max_job_seconds=2.0, max_jobs_per_session=1)
    demo = build_app(Studio(settings, model_set=tiny_model_set), max_jobs_per_session=1)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True,
                            **launch_options(settings, server_port=None))
    try:
        yield demo, url
    finally:
        demo.close()


def wait_running(job, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while job.status().code.name not in ("PROCESSING", "PROGRESS") and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)


def test_a_job_over_the_work_budget_is_refused_before_it_runs(limited):
    client = Client(limited[1], verbose=False)
    with pytest.raises(AppError, match=r"more than the 4 this server takes per job"):
        client.predict(**{**SMALL, "width": 512, "height": 512, "steps": 20},
                       api_name="/txt2img")
    _, info = client.predict(**SMALL, api_name="/txt2img")
    assert json.loads(info)["seed"] == 3


def test_a_job_past_the_time_budget_is_stopped(limited, monkeypatch):
    from studio.backend import requests

    # a cheap-looking job that runs long: the time budget catches what the estimate misses
    monkeypatch.setattr(requests.GenerationParams, "work", lambda self: 0.0)
    client = Client(limited[1], verbose=False)
    t0 = time.time()
    with pytest.raises(AppError, match=r"ran past this server's limit of 2 s per job"):
        client.predict(**LONG, api_name="/txt2img")
    assert time.time() - t0 < 30
    monkeypatch.undo()
    _, info = client.predict(**SMALL, api_name="/txt2img")
    assert json.loads(info)["seed"] == 3


def test_one_job_at_a_time_per_visitor(limited, monkeypatch):
    from studio.backend import requests

    monkeypatch.setattr(requests.GenerationParams, "work", lambda self: 0.0)
    me, other = Client(limited[1], verbose=False), Client(limited[1], verbose=False)
    job = me.submit(**LONG, api_name="/txt2img")
    wait_running(job)
    with pytest.raises(ValidationError, match="already have 1 job waiting or running"):
        me.predict(**SMALL, api_name="/txt2img")
    queued = other.submit(**SMALL, api_name="/txt2img")  # another visitor may queue
    me.predict(api_name="/cancel")
    with pytest.raises(AppError, match="Cancelled"):
        job.result(timeout=60)
    assert json.loads(queued.result(timeout=60)[1])["seed"] == 3
    _, info = me.predict(**SMALL, api_name="/txt2img")  # my next job goes through
    assert json.loads(info)["seed"] == 3


def test_stop_also_stops_the_jobs_a_session_has_waiting(client, app_url):
    """Stop while a job still waits in the queue stops that job (not just the last one)."""
    busy, mine = Client(app_url, verbose=False), Client(app_url, verbose=False)
    blocker = busy.submit(**LONG, api_name="/txt2img")
    wait_running(blocker)
    waiting = mine.submit(**SMALL, api_name="/txt2img")  # queued behind the blocker
    time.sleep(0.5)
    assert mine.predict(api_name="/cancel") is False  # nothing of mine is running yet
    busy.predict(api_name="/cancel")
    with pytest.raises(AppError, match="Cancelled"):
        blocker.result(timeout=60)
    with pytest.raises(AppError, match="stopped before it started"):
        waiting.result(timeout=60)
    _, info = mine.predict(**SMALL, api_name="/txt2img")  # a job sent after Stop runs
    assert json.loads(info)["seed"] == 3


def stop_functions(demo: gr.Blocks) -> list:
    out = []
    for fn in demo.fns.values():
        triggers = [demo.blocks.get(block_id) for block_id, _ in fn.targets]
        if any(isinstance(t, gr.Button) and t.value == "Stop" for t in triggers) and fn.fn:
            out.append(fn)
    return out


def test_every_stop_button_knows_its_session(served):
    """gradio injects the session only into a parameter annotated gr.Request."""
    from gradio.utils import get_type_hints

    stops = stop_functions(served[0])
    assert len(stops) >= 8  # every generating tab, PNG info included
    for fn in stops:
        hints = get_type_hints(fn.fn)
        assert gr.Request in hints.values(), fn.fn


def stop_of(demo: gr.Blocks, prefix: str):
    """The Stop handler of the tab whose widgets' elem_ids start with `prefix`."""
    return next(fn for fn in stop_functions(demo)
                if (demo.blocks[fn.targets[0][0]].elem_id or "") == f"{prefix}-stop")


def _run_then_stop(url: str, job_index: int, job_data: list, stop_index: int
                   ) -> tuple[str, object]:
    """Run a job for a new browser session, press that session's Stop after 3 s."""
    session, result = uuid.uuid4().hex, {}
    thread = threading.Thread(target=lambda: result.update(
        out=join(url, job_index, job_data, session=session)))
    thread.start()
    time.sleep(3)  # the job is running
    run(url, stop_index, [], session=session)
    thread.join(60)
    return result["out"]


def test_layout_stop_cancels_its_own_session(served, client):
    from tests.api.test_exposure import payload

    demo, url = served
    boxes = json.dumps([{"phrase": "a cat", "box": [0.1, 0.1, 0.5, 0.5]}])
    data = payload(client, "/layout", **{**LONG, "boxes": boxes, "prompt": "a cat"})
    kind, answer = _run_then_stop(url, fn_index(demo, api_name="layout"), data,
                                  stop_of(demo, "layout")._id)
    assert kind == "error" and "Cancelled" in json.dumps(answer)


def test_regenerate_can_be_stopped(served, studio):
    from PIL import Image

    demo, url = served
    # a saved image whose stored request is long to re-run
    request = {**LONG, "task": "txt2img", "negative_prompt": "", "guidance_scale": 7.5,
               "scheduler": "Euler a", "fast": False}
    saved = studio.outputs.save(Image.new("RGB", (512, 512)), request, studio.model_name)
    upload = Path(demo.GRADIO_CACHE) / uuid.uuid4().hex / "saved.png"  # dropped in the tab
    upload.parent.mkdir(parents=True)
    shutil.copy(saved, upload)
    kind, answer = _run_then_stop(
        url, fn_index(demo, fn_name="regenerate"),
        [{"path": str(upload), "meta": {"_type": "gradio.FileData"}}],
        stop_of(demo, "pnginfo")._id)
    assert kind == "error" and "Cancelled" in json.dumps(answer)


@pytest.fixture(scope="module")
def public_limited(tiny_settings, tiny_model_set, tmp_path_factory):
    """start(trusted_proxies) -> URL of a public studio (one job per visitor), served on
    the loopback address."""
    from studio.backend.service import Studio

    demos = []

    def start(trusted: str = "") -> str:
        settings = replace(tiny_settings, host="0.0.0.0", trusted_proxies=trusted,
                           outputs_dir=tmp_path_factory.mktemp("public"), max_job_work=0.0,
                           max_job_seconds=0.0, max_jobs_per_session=1, a1111_api=False)
        demo, url = launch_local(Studio(settings, model_set=tiny_model_set), 1)
        demos.append(demo)
        return url

    yield start
    for demo in demos:
        demo.close()


def test_fresh_session_names_do_not_reset_a_public_visitors_limit(public_limited):
    url = public_limited()
    me = Client(url, verbose=False)
    job = me.submit(**LONG, api_name="/txt2img")
    wait_running(job)
    data = payload(me, "/txt2img", **SMALL)
    refused = [call(url, "/txt2img", data, session=uuid.uuid4().hex, timeout=30)
               for _ in range(20)]
    refused.append(call(url, "/txt2img", data, timeout=30))  # no session named at all
    accepted = [i for i, (kind, answer) in enumerate(refused) if kind not in ("error", "refused")
                or "already have 1 job" not in json.dumps(answer)]
    assert accepted == [], (accepted, [refused[i] for i in accepted][:1])
    me.predict(api_name="/cancel")
    with pytest.raises(AppError, match="Cancelled"):
        job.result(timeout=60)
    kind, _ = call(url, "/txt2img", data, session=uuid.uuid4().hex, timeout=60)
    assert kind == "complete"  # its job done, the visitor is welcome again


def test_a_trusted_proxy_names_the_visitor(public_limited):
    """Visitors behind one proxy (here on this machine, which the web server trusts by
    default; --trusted-proxies names others) are told apart by the address it forwards."""
    url = public_limited(trusted="10.0.0.2")
    me = Client(url, verbose=False, headers={"X-Forwarded-For": "198.51.100.7"})
    job = me.submit(**LONG, api_name="/txt2img")
    wait_running(job)
    same = call(url, "/txt2img", payload(me, "/txt2img", **SMALL), session=uuid.uuid4().hex,
                timeout=30, headers={"X-Forwarded-For": "198.51.100.7"})
    assert "already have 1 job" in json.dumps(same[1])
    # another visitor behind the same proxy may queue (behind the running job)
    other = Client(url, verbose=False, headers={"X-Forwarded-For": "198.51.100.8"})
    queued = other.submit(**SMALL, api_name="/txt2img")
    time.sleep(0.5)
    me.predict(api_name="/cancel")
    with pytest.raises(AppError, match="Cancelled"):
        job.result(timeout=60)
    assert json.loads(queued.result(timeout=60)[1])["seed"] == 3
