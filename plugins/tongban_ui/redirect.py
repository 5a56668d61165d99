"""``/tongban`` (no slash) to ``/tongban/``: a root middleware of the API server (the plugin's app is mounted at
``/tongban/`` and never sees the bare prefix, which Airflow answers 404). Plain ASGI: nothing imported."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class SlashRedirect:
    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        if scope["type"] == "http" and scope.get("path") == self.prefix and scope.get("method") in ("GET", "HEAD"):
            location = f"{scope.get('root_path', '')}{self.prefix}/"
            if scope.get("query_string"):
                location += "?" + scope["query_string"].decode("latin-1")
            await send(
                {
                    "type": "http.response.start",
                    "status": 307,
                    "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)
