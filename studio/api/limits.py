"""Limits every HTTP request meets before anything reads its body.

Starlette and gradio read a request's whole body before any route or FastAPI dependency
runs, so a 300 MB JSON body to a route that answers 401 or 403 still costs its size in memory
(and gradio's queue takes a 200 MB body as readily). This ASGI middleware, outermost of the
studio's own, answers first:

1. the A1111 API's access rule (`a1111.access_refusal`: its credentials, or 403 on a public
   studio without them) from the headers alone, so a refused request's body is never read;
2. a size limit per route, from `Content-Length` when the client sends one and while the body
   streams (chunked requests have none): 413 with a message that says the limit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# (path prefix, bytes) for the routes that take more than the default, first match wins
RouteLimits = Sequence[tuple[str, int]]
# headers -> (status, message) when the request is refused, else None
AccessCheck = Callable[[Mapping[str, str]], "tuple[int, str, dict[str, str]] | None"]

MB = 1024 * 1024
JSON_BODY_MB = 4  # gradio's routes take JSON values and file references only
UPLOAD_ROUTE = "/gradio_api/upload"


def route_limits(max_file_mb: float, base64_prefixes: Sequence[str],
                 max_model_mb: float = 0.0) -> tuple[int, list[tuple[str, int]]]:
    """(default, [(route prefix, bytes)]): routes taking images as base64 JSON (4/3 of
    their size, several per request) get 4 files' room, gradio's upload route 8 files' or
    one model file's, whichever is more."""
    file_bytes = int(max_file_mb * MB)
    routes = [(prefix, 4 * file_bytes) for prefix in base64_prefixes]
    routes.append((UPLOAD_ROUTE, max(8 * file_bytes, int(max_model_mb * MB)) + MB))
    return JSON_BODY_MB * MB, routes


class RequestLimits:
    """ASGI middleware: access check, then per-route body limits (see the module)."""

    def __init__(self, app: ASGIApp, default: int, routes: RouteLimits = (),
                 guarded: Sequence[str] = (), access: AccessCheck | None = None) -> None:
        self.app, self.default, self.routes = app, int(default), list(routes)
        self.guarded, self.access = tuple(guarded), access

    def limit(self, path: str) -> int:
        for prefix, size in self.routes:
            if path.startswith(prefix):
                return int(size)
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = Headers(scope=scope)
        if self.access is not None and path.startswith(self.guarded):
            refused = self.access(headers)
            if refused is not None:
                status, message, extra = refused
                await _answer(scope, receive, send, status, message, extra)
                return
        limit = self.limit(path)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _answer(scope, receive, send, 413, _too_large(limit))
            return
        started = refused = False
        received = 0

        async def counted_receive() -> Message:
            # Past the limit: answer 413 now and tell the app the client has gone, so it
            # stops reading (an exception here would become a route's generic 400).
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await _answer(scope, receive, send, 413, _too_large(limit))
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted_receive, watched_send)


def _too_large(limit: int) -> str:
    return (f"This request's body is larger than {limit / MB:g} MB, the most this server "
            "takes on this route; send smaller or fewer images (--max-file-mb sets the limit).")


async def _answer(scope: Scope, receive: Receive, send: Send, status: int, message: str,
                  headers: dict[str, str] | None = None) -> None:
    """A JSON refusal in both shapes clients read (FastAPI's `detail`, A1111's `error`); the
    connection closes, so a client still sending a refused body stops."""
    await JSONResponse({"detail": message, "error": message}, status_code=status,
                       headers={**(headers or {}), "Connection": "close"})(scope, receive, send)
