"""The HTTP side of the websocket listener: static GET resources (the browser client
among them), the WebSocket path and the ``Origin`` allow-list."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.trio.server import ServerConnection

from ._listener import Listener
from ._refusal import RefusalKind
from ._wsaccept import peer_of

__all__ = ["BROWSER_CLIENT_PATH", "SAME_ORIGIN", "Gate", "HttpResource", "browser_client"]

BROWSER_CLIENT_PATH = "/pipekit.js"
SAME_ORIGIN = "same-origin"
"""In ``origins=``: admit the pages this listener serves itself (its own scheme, host and
port; for a loopback listener also ``localhost``), as a browser names their origin."""


def browser_client() -> bytes:
    """The browser client's source (``pipekit.js``, an ES module)."""
    return resources.files(__package__).joinpath("web", "pipekit.js").read_bytes()


@dataclass(frozen=True, slots=True)
class HttpResource:
    """A static HTTP response body served for GET requests by
    :func:`pipekit.adapters.websocket.listen`."""

    body: bytes
    content_type: str = "text/html; charset=utf-8"


def _response(status: int, reason: str, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    return Response(status, reason, headers, body)


class Gate:
    """The websocket listener's ``process_request``: static resources, the WebSocket path
    and the origin allow-list (refusals are recorded in the listener)."""

    def __init__(
        self,
        listener: Listener,
        path: str,
        origins: Sequence[str | None] | None,
        http: Mapping[str, HttpResource],
    ) -> None:
        self.listener = listener
        self.path = path
        self.origins = None if origins is None else list(origins)
        self.http = dict(http)

    def bind(self, scheme: str, host: str, port: int) -> None:
        """Replace :data:`SAME_ORIGIN` in the allow-list by the origins of the pages this
        listener serves itself, now that its port is known."""
        if self.origins is None or SAME_ORIGIN not in self.origins:
            return
        names = [f"[{host}]" if ":" in host else host]
        if host in ("127.0.0.1", "::1", "0.0.0.0", "::"):
            names = ["127.0.0.1", "localhost", "[::1]"]
        own = [f"{scheme}://{name}:{port}" for name in names]
        self.origins = [o for o in self.origins if o != SAME_ORIGIN] + own

    def __call__(self, ws: ServerConnection, request: Request) -> Response | None:
        # get_all: a repeated header must not make get() raise (HTTP 500).
        is_upgrade = "websocket" in ",".join(request.headers.get_all("Upgrade")).lower()
        route = request.path.split("?", 1)[0]
        if not is_upgrade:
            resource = self.http.get(route)
            if resource is None:
                return _response(404, "Not Found", b"not found\n", "text/plain; charset=utf-8")
            return _response(200, "OK", resource.body, resource.content_type)
        peer = peer_of(ws)
        if route != self.path:
            reason = f"no WebSocket endpoint at {route} (use {self.path})"
            self.listener.record_refusal(peer, RefusalKind.NOT_FOUND, reason)
            return ws.respond(404, reason + "\n")
        if self.origins is not None:
            origins = request.headers.get_all("Origin")
            origin = origins[0] if origins else None
            if len(origins) > 1 or origin not in self.origins:
                reason = (
                    f"more than one Origin header: {origins!r}"
                    if len(origins) > 1
                    else f"origin {origin!r} is not allowed"
                )
                self.listener.record_refusal(peer, RefusalKind.ORIGIN, reason)
                return ws.respond(403, reason + "\n")
        return None
