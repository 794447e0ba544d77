"""Load: 16 concurrent clients x 3 requests; all complete (or get 'queue full'), no deadlock."""

from __future__ import annotations

import gc
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

pytestmark = pytest.mark.slow
CLIENTS, REQUESTS = 16, 3


def rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def test_sixteen_clients_three_requests_each(app_url, client):
    params = {"prompt": "a blue square", "steps": 2, "width": 64, "height": 64}
    client.predict(**params, seed=0, api_name="/txt2img")  # warm: models loaded, caches built
    gc.collect()
    before = rss_bytes()

    def user(i: int) -> list[str]:
        c = Client(app_url, verbose=False, httpx_kwargs={"timeout": 120})
        outcomes = []
        for j in range(REQUESTS):
            try:
                _, info = c.predict(**params, seed=100 * i + j, api_name="/txt2img")
                assert json.loads(info)["seed"] == 100 * i + j
                outcomes.append("ok")
            except AppError as err:  # the only acceptable failure is an explicit queue-full
                assert "queue" in str(err).lower() and "full" in str(err).lower(), str(err)
                outcomes.append("queue full")
        return outcomes

    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(user, i) for i in range(CLIENTS)]
        results = [f.result(timeout=600) for f in futures]  # a deadlock would time out here
    flat = [o for r in results for o in r]
    assert len(flat) == CLIENTS * REQUESTS
    assert flat.count("ok") >= CLIENTS  # the queue (64) is larger than the load: most succeed
    gc.collect()
    after = rss_bytes()
    assert after <= before * 1.10, f"RSS grew from {before / 2**20:.0f} to {after / 2**20:.0f} MiB"
