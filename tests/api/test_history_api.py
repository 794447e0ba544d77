"""/history through gradio_client: the saved images as JSON, newest first, searchable, paged;
bad values are clear errors; the index itself is never served."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import replace

import pytest
from gradio_client.exceptions import AppError

from studio.backend.history import INDEX_DIR, INDEX_FILE

SMALL = {"steps": 1, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def made(client) -> list[str]:
    """Two images made through the API (older first); their files."""
    files = []
    for prompt, seed in (("a history red circle", 11), ("a history blue square", 12)):
        _, info = client.predict(prompt=prompt, seed=seed, **SMALL, api_name="/txt2img")
        files.append(json.loads(info)["file"])
    return files


def test_history_lists_the_newest_first_with_defaults(client, made):
    items = client.predict(api_name="/history")
    assert isinstance(items, list) and 2 <= len(items) <= 50
    files = [i["file"] for i in items]
    assert files.index(made[1]) < files.index(made[0])
    first = items[files.index(made[1])]
    assert set(first) == {"file", "task", "prompt", "seed", "model", "created"}
    assert (first["prompt"], first["seed"], first["task"]) == ("a history blue square", 12,
                                                                "txt2img")
    assert not first["file"].startswith("/") and "T" in first["created"]


def test_history_query_limit_and_offset(client, made):
    found = client.predict(limit=10, query="HISTORY RED", api_name="/history")
    assert [i["file"] for i in found] == [made[0]]
    both = client.predict(limit=50, query="a history", api_name="/history")
    assert [i["file"] for i in both] == made[::-1]
    second = client.predict(limit=1, query="a history", offset=1, api_name="/history")
    assert [i["file"] for i in second] == [made[0]]
    assert client.predict(limit=1, query="no such words here", api_name="/history") == []


@pytest.mark.parametrize(("kw", "message"), [
    ({"limit": 0}, "limit must be from 1 to 500"),
    ({"limit": 10_000}, "limit must be from 1 to 500"),
    ({"limit": 5, "query": "", "offset": -1}, "offset must be from 0 to 1000000000"),
    ({"limit": 5, "query": "q" * 1000}, "query is 1000 characters long"),
])
def test_bad_history_values_are_clear_errors(client, kw, message):
    with pytest.raises(AppError, match=message):
        client.predict(**kw, api_name="/history")
    assert isinstance(client.predict(limit=1, api_name="/history"), list)  # still serving


def test_the_index_is_not_served(app_url, studio, made):
    client_file = studio.outputs.root / made[0]
    index = studio.outputs.root / INDEX_DIR / INDEX_FILE
    assert index.is_file()
    with urllib.request.urlopen(f"{app_url}gradio_api/file={client_file}") as served:
        assert served.status == 200  # outputs are served ...
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{app_url}gradio_api/file={index}")
    assert err.value.code == 403  # ... their index is not


def test_a_public_studio_without_a_login_keeps_its_history_to_itself(tiny_settings,
                                                                      tiny_model_set, tmp_path):
    from studio.backend.requests import RequestError
    from studio.backend.service import Studio

    public = replace(tiny_settings, outputs_dir=tmp_path, host="0.0.0.0")
    studio = Studio(public, model_set=tiny_model_set)
    studio.txt2img({"prompt": "a secret prompt", "seed": 1, "steps": 1, "width": 64,
                    "height": 64})
    with pytest.raises(RequestError, match="--public-history"):
        studio.history()
    with pytest.raises(RequestError, match="--auth"):
        studio.history_file("anything.png")
    for allowed in (replace(public, auth="me:pw"), replace(public, public_history=True)):
        studio.settings = allowed
        assert [h["prompt"] for h in studio.history()] == ["a secret prompt"]
