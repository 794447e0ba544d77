"""What gradio's queue does not do for us: a per-visitor job limit and submission times.

Gradio bounds the queue as a whole (`max_size`) but not per visitor, so one client can fill it
with jobs; and a job's handler cannot tell when it was queued, which Stop needs to also stop
the jobs its session still has waiting. Gradio has no hook for either, so this wraps the one
place every queued call passes, `Queue.push`, of one Blocks' queue:

- a call for the GPU queue from a session that already has `max_jobs` waiting or running
  there is refused at once (no job is queued), as a failed input validation: that is the
  refusal whose message both the browser (on the first input) and gradio_client (a
  ValidationError) show; "queue full" would show gradio's own text instead;
- on a public studio the same limit holds per client address too: a client chooses its
  session name (and a raw HTTP call without one gets a fresh one), so fresh names would
  reset a per-session limit. The address is the connection's, or, from a trusted proxy
  (`--trusted-proxies`; on a Hugging Face Space the platform's), the visitor's it forwards;
- every accepted call gets its submission time on its HTTP request's state, which the
  handler reads back (`common.submitted_at`).
"""

from __future__ import annotations

import os
import time
from typing import Any

import gradio as gr

from .common import GPU_QUEUE, SUBMITTED


def gpu_events(queue: Any) -> list[Any]:
    """The GPU queue's events, waiting and running."""
    waiting = getattr(queue.event_queue_per_concurrency_id.get(GPU_QUEUE), "queue", [])
    running = [e for job in queue.active_jobs if job for e in job]
    return [e for e in [*waiting, *running] if e.concurrency_id == GPU_QUEUE]


def session_jobs(queue: Any, session: str | None) -> int:
    """How many GPU jobs `session` has waiting or running in gradio's queue."""
    return sum(1 for e in gpu_events(queue) if e.session_hash == session)


def client_address(request: Any, trusted: frozenset[str]) -> str:
    """The visitor's address: the connection's, or the one a trusted proxy forwards (the
    last address it added, that is the entry just before the proxies' own)."""
    host = getattr(getattr(request, "client", None), "host", "") or ""
    headers = getattr(request, "headers", None) or {}
    forwarded = [a.strip() for a in str(headers.get("x-forwarded-for", "")).split(",")
                 if a.strip()]
    if forwarded and (host in trusted or os.environ.get("SPACE_ID")):
        for address in reversed(forwarded):
            if address not in trusted:
                return address
    return host


def address_jobs(queue: Any, address: str, trusted: frozenset[str]) -> int:
    """How many GPU jobs the visitor at `address` has waiting or running."""
    return sum(1 for e in gpu_events(queue)
               if client_address(getattr(e, "request", None), trusted) == address)


def install_queue_guard(demo: gr.Blocks, max_jobs: int = 0, per_address: bool = False,
                        trusted_proxies: str = "") -> None:
    """Wrap `demo`'s queue: at most `max_jobs` GPU jobs per session (0 = no limit), and per
    client address too with `per_address` (a public studio)."""
    queue = demo._queue
    push = queue.push
    trusted = frozenset(a.strip() for a in trusted_proxies.split(",") if a.strip())

    def over_limit(session: str | None, request: Any) -> bool:
        if session and session_jobs(queue, session) >= max_jobs:
            return True
        if per_address:
            address = client_address(request, trusted)
            return bool(address) and address_jobs(queue, address, trusted) >= max_jobs
        return False

    async def guarded_push(body: Any, request: Any, username: str | None) -> Any:
        fn = demo.fns.get(body.fn_index) if body.fn_index is not None else None
        session = body.session_hash
        if max_jobs and fn is not None and fn.concurrency_id == GPU_QUEUE:
            if over_limit(session, request):
                plural = "job" if max_jobs == 1 else "jobs"
                message = (f"You already have {max_jobs} {plural} waiting or running on this "
                           "server, the most it takes from one visitor. Wait for it to "
                           "finish, or press Stop, then try again.")
                return False, [{"__type__": "validate", "is_valid": False, "message": message,
                                "parameter_name": "queue"}], "validator_error"
        state = getattr(getattr(body, "request", None), "state", None)
        if state is not None:
            setattr(state, SUBMITTED, time.monotonic())
        return await push(body, request, username)

    queue.push = guarded_push
