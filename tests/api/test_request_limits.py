"""Request bodies meet their limits before anything reads them: a 300 MB body to the A1111
API of a public studio gets its 403 (or, with `--api-auth`, its 401) from the headers alone,
any route refuses a body over its limit with 413 whether the client declares its length or
streams it, and memory does not grow with what was sent."""

from __future__ import annotations

import base64
import resource
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import urlparse

import pytest

from tests.support.serve import launch_local

BIG = 300 * 1024 * 1024
pytestmark = pytest.mark.slow  # two more studios served: about 15 s


@pytest.fixture(scope="module")
def start(tiny_settings, tiny_model_set, tmp_path_factory) -> Iterator:
    """start(**settings changes) -> the URL of a studio served with them."""
    from studio.backend.service import Studio

    demos = []

    def start(**changes) -> str:
        settings = replace(tiny_settings, outputs_dir=tmp_path_factory.mktemp("limits"),
                           **changes)
        demo, url = launch_local(Studio(settings, model_set=tiny_model_set))
        demos.append(demo)
        return url

    yield start
    for demo in demos:
        demo.close()


def raw_post(url: str, path: str, headers: dict[str, str], body: bytes = b"",
             send_body_mb: int = 0) -> tuple[int, str, float]:
    """POST by hand: the headers (which may announce a body never sent), then `body`, or
    `send_body_mb` MB chunked; returns (status, response text, seconds to the answer)."""
    where = urlparse(url)
    t0 = time.monotonic()
    with socket.create_connection((where.hostname, where.port), timeout=20) as sock:
        head = [f"POST {path} HTTP/1.1", f"Host: {where.hostname}:{where.port}",
                *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        sock.sendall("\r\n".join(head).encode() + body)
        if send_body_mb:
            chunk = b"x" * (1024 * 1024)
            sock.settimeout(2)
            try:
                for _ in range(send_body_mb):
                    sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                pass  # the server stopped reading: its answer is waiting
            sock.settimeout(20)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.find(b"\r\n\r\n") + 20:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1])
    return status, answer.decode("latin-1"), time.monotonic() - t0


def grown_mb(before: int) -> float:
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def test_a_public_studios_a1111_api_refuses_a_huge_body_before_reading_it(start):
    url = start(host="0.0.0.0")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status, text, seconds = raw_post(url, "/sdapi/v1/txt2img", {
        "Content-Type": "application/json", "Content-Length": str(BIG)})
    assert status == 403 and "needs a login" in text and seconds < 5
    assert grown_mb(before) < 50


def test_api_auth_is_checked_before_the_body_and_guards_interrupt(start):
    url = start(api_auth="me:secret")
    status, text, _ = raw_post(url, "/sdapi/v1/txt2img", {
        "Content-Type": "application/json", "Content-Length": str(BIG)})
    assert status == 401 and "--api-auth" in text
    status, _, _ = raw_post(url, "/sdapi/v1/interrupt", {"Content-Length": "0"})
    assert status == 401
    good = base64.b64encode(b"me:secret").decode()
    status, _, _ = raw_post(url, "/sdapi/v1/interrupt", {"Content-Length": "0",
                                                          "Authorization": f"Basic {good}"})
    assert status == 200


def test_bodies_over_the_route_limit_get_413_declared_or_streamed(app_url):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status, text, _ = raw_post(app_url, "/gradio_api/queue/join", {
        "Content-Type": "application/json", "Content-Length": str(200 * 1024 * 1024)})
    assert status == 413 and "larger than 4 MB" in text
    status, text, _ = raw_post(app_url, "/gradio_api/queue/join", {
        "Content-Type": "application/json", "Transfer-Encoding": "chunked"}, send_body_mb=64)
    assert status == 413 and "larger than 4 MB" in text
    status, text, _ = raw_post(app_url, "/sdapi/v1/txt2img", {
        "Content-Type": "application/json", "Content-Length": str(BIG)})
    assert status == 413 and "larger than 48 MB" in text  # 4 x --max-file-mb (12 here)
    assert grown_mb(before) < 50


def test_requests_within_the_limits_are_served(client, app_url):
    import httpx

    answer = httpx.post(app_url.rstrip("/") + "/sdapi/v1/txt2img", timeout=60, json={
        "prompt": "a cat", "steps": 1, "width": 64, "height": 64, "seed": 2})
    assert answer.status_code == 200 and answer.json()["images"]
    _, info = client.predict(prompt="a cat", steps=1, width=64, height=64, seed=2,
                             api_name="/txt2img")
    assert '"seed": 2' in info
