"""Raw HTTP calls to a served studio, as an attacker (or the browser) sends them.

gradio_client uploads files and fills in what it must; these send exactly the JSON given:
`call` uses the public `/gradio_api/call/<api>` route, `join` the queue route the browser uses
for any event by its index (private ones included).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx


def _events(response: httpx.Response) -> list[tuple[str, Any]]:
    out, event = [], None
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            raw = line.split(":", 1)[1].strip()
            try:
                data = json.loads(raw)
            except json.JSONDecodeError:
                data = raw
            out.append((event or "", data))
    return out


def call(url: str, api_name: str, data: list[Any], timeout: float = 120,
         session: str | None = None, headers: dict[str, str] | None = None
         ) -> tuple[str, Any]:
    """POST data to /gradio_api/call/<api_name> (as `session`, which a client may choose
    freely) and read the result stream: ("complete", outputs), ("error", message) or
    ("refused", http detail) when the queue turned it away."""
    base = url.rstrip("/") + f"/gradio_api/call/{api_name.strip('/')}"
    body: dict[str, Any] = {"data": data}
    if session is not None:
        body["session_hash"] = session
    with httpx.Client(timeout=timeout) as http:
        posted = http.post(base, json=body, headers=headers)
        if posted.status_code != 200:
            return "refused", posted.json().get("detail", posted.text)
        event_id = posted.json()["event_id"]
        with http.stream("GET", f"{base}/{event_id}") as stream:
            events = _events(stream)
    for kind, payload in events:
        if kind in ("complete", "error"):
            return kind, payload
    return "none", events


def fn_index(demo: Any, trigger_label: str | None = None, api_name: str | None = None,
             fn_name: str | None = None) -> int:
    """The index of an event of `demo`: by API name, or by its function's name."""
    for index, fn in demo.fns.items():
        if api_name is not None and fn.api_name == api_name:
            return index
        if fn_name is not None and getattr(fn.fn, "__name__", None) == fn_name:
            return index
    raise KeyError(api_name or fn_name or trigger_label)


def join(url: str, index: int, data: list[Any], session: str | None = None,
         timeout: float = 120) -> tuple[str, Any]:
    """Queue event `index` with `data` for `session` (as the browser does) and wait for it:
    ("complete", outputs), ("error", message) or ("refused", detail)."""
    session = session or uuid.uuid4().hex
    root = url.rstrip("/") + "/gradio_api"
    with httpx.Client(timeout=timeout) as http:
        posted = http.post(f"{root}/queue/join", json={
            "data": data, "fn_index": index, "session_hash": session, "event_data": None,
            "trigger_id": None})
        if posted.status_code != 200:
            return "refused", posted.json().get("detail", posted.text)
        event_id = posted.json()["event_id"]
        with http.stream("GET", f"{root}/queue/data", params={"session_hash": session}) as s:
            for _, payload in _events(s):
                if isinstance(payload, dict) and payload.get("msg") == "process_completed" \
                        and payload.get("event_id") == event_id:
                    output = payload.get("output", {})
                    if payload.get("success"):
                        return "complete", output.get("data")
                    return "error", output.get("error") or output
    return "none", None


def run(url: str, index: int, data: list[Any], session: str) -> Any:
    """Run an unqueued event (queue=False, e.g. a Stop button) for `session` at once, as the
    browser does; returns its outputs."""
    root = url.rstrip("/") + "/gradio_api"
    with httpx.Client(timeout=30) as http:
        answer = http.post(f"{root}/run/predict", json={
            "data": data, "fn_index": index, "session_hash": session, "event_data": None,
            "trigger_id": None})
    answer.raise_for_status()
    return answer.json().get("data")


def payload(client: Any, api: str, **values: Any) -> list[Any]:
    """The data list of endpoint `api` as a raw call sends it: `values` by parameter name,
    every other parameter at the default the API lists (read through `client`)."""
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"][api]
    return [values.get(p["parameter_name"], p["parameter_default"])
            for p in params["parameters"]]
