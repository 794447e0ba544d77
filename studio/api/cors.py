"""Cross-origin access (`--cors-allow-origins`), as A1111's flag of the same name.

Gradio's own CORS middleware is the app's outermost layer: it answers every preflight itself
and allows only the page's own host and localhost, so a web client served from another origin
(openOutpaint on its own port, a browser extension's page) is blocked whatever the app's inner
middleware does. Starlette's CORSMiddleware therefore wraps the whole built stack, after
launch, for the listed origins only; other origins go on to gradio's rules unchanged.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send


class AllowedOrigins:
    """ASGI wrapper: requests from the allowed origins get starlette's CORS answers."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app, self.origins = app, set(origins)
        self.cors = CORSMiddleware(app, allow_origins=list(origins), allow_methods=["*"],
                                   allow_headers=["*"], allow_credentials="*" not in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origin = Headers(scope=scope).get("origin")
            if origin is not None and ("*" in self.origins or origin in self.origins):
                await self.cors(scope, receive, send)
                return
        await self.app(scope, receive, send)


def allow_origins(app: Any, origins: list[str]) -> None:
    """Wrap a (launched) starlette app's whole middleware stack, gradio's CORS included."""
    if not origins:
        return
    stack = app.middleware_stack or app.build_middleware_stack()
    app.middleware_stack = AllowedOrigins(stack, origins)
