"""Keys are checked from the headers alone, before a byte of the body is read.

A caller without a valid key cannot make the server receive, parse or tokenise a body: a 32 MiB upload with no key
is answered 401 as soon as its headers arrive. The principal found here is what the route's dependency uses.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from embedserve import errors
from embedserve.api.deps import bearer_token, get_gateway
from embedserve.api.errors import error_response

KEYED_PATHS = frozenset({"/v1/embeddings", "/embeddings", "/v1/files", "/v1/batches"})  # POSTs with a body
ADMIN_TOO = frozenset({"/v1/files", "/v1/batches"})  # the admin key sees (and may make) every file and batch
ADMIN_PREFIX = "/admin"


def _needs_admin(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


async def _caller(request: Request, *, path: str) -> dict[str, object]:
    """The key's principal; for files and batches, failing that, the admin key (it sees and makes them all)."""
    gateway, token = get_gateway(request), bearer_token(request)
    try:
        return {"principal": await gateway.authenticate(token)}
    except errors.AuthenticationError:
        if path not in ADMIN_TOO:
            raise
        try:
            await gateway.authenticate_admin(token)
        except errors.EmbedServeError:
            pass
        else:
            return {"admin": True}
        raise


class AuthGateMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path in KEYED_PATHS or _needs_admin(path)):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            gateway = get_gateway(request)
            if _needs_admin(path):
                await gateway.authenticate_admin(bearer_token(request))
                scope.setdefault("state", {})["admin"] = True
            elif scope.get("method") == "POST":
                scope.setdefault("state", {}).update(await _caller(request, path=path))
        except errors.EmbedServeError as exc:
            response = error_response(exc, request)
            # Close rather than drain: the server would otherwise read (and discard) the whole unwanted upload.
            response.headers["connection"] = "close"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
