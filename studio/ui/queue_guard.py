"""What gradio's queue does not do for us: a per-visitor job limit and submission times.

Gradio bounds the queue as a whole (`max_size`) but not per visitor, so one client can fill it
with jobs; and a job's handler cannot tell when it was queued, which Stop needs to also stop
the jobs its session still has waiting. Gradio has no hook for either, so this wraps the one
place every queued call passes, `Queue.push`, of one Blocks' queue:

- a call for the GPU queue from a session that already has `max_jobs` waiting or running
  there is refused at once (no job is queued), as a failed input validation: that is the
  refusal whose message both the browser (on the first input) and gradio_client (a
  ValidationError) show; "queue full" would show gradio's own text instead. Raw HTTP
  calls that name no session are each their own session to gradio; the queue's
  `max_size` bounds those;
- every accepted call gets its submission time on its HTTP request's state, which the
  handler reads back (`common.submitted_at`).
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from .common import GPU_QUEUE, SUBMITTED


def session_jobs(queue: Any, session: str | None) -> int:
    """How many GPU jobs `session` has waiting or running in gradio's queue."""
    waiting = getattr(queue.event_queue_per_concurrency_id.get(GPU_QUEUE), "queue", [])
    running = [e for job in queue.active_jobs if job for e in job]
    return sum(1 for e in [*waiting, *running]
               if e.session_hash == session and e.concurrency_id == GPU_QUEUE)


def install_queue_guard(demo: gr.Blocks, max_jobs: int = 0) -> None:
    """Wrap `demo`'s queue: at most `max_jobs` GPU jobs per session (0 = no limit)."""
    queue = demo._queue
    push = queue.push

    async def guarded_push(body: Any, request: Any, username: str | None) -> Any:
        fn = demo.fns.get(body.fn_index) if body.fn_index is not None else None
        session = body.session_hash
        if max_jobs and session and fn is not None and fn.concurrency_id == GPU_QUEUE:
            if session_jobs(queue, session) >= max_jobs:
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
