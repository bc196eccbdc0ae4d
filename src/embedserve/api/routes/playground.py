"""The playground page: ``GET /`` and ``GET /playground`` (HTML) and its three assets under ``/static/``.

Served by plain routes from the package's ``api/static`` (no mount, no build step). A strict CSP keeps
the page on this origin: it loads nothing from, and sends nothing to, anywhere else.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from embedserve import errors

router = APIRouter(tags=["playground"], include_in_schema=False)

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@cache
def _read(name: str) -> bytes:
    return files("embedserve.api").joinpath("static").joinpath(name).read_bytes()


def _asset(name: str) -> Response:
    headers = dict(_HEADERS)
    if name == "index.html":
        headers["Content-Security-Policy"] = CSP
    return Response(_read(name), media_type=ASSETS[name], headers=headers)


@router.api_route("/", methods=["GET", "HEAD"])
@router.api_route("/playground", methods=["GET", "HEAD"])
async def playground() -> Response:
    return _asset("index.html")


@router.get("/static/{name}")
async def static_asset(name: str) -> Response:
    if name not in ASSETS:
        raise errors.NotFoundError(f"No static file '{name}' on this server.")
    return _asset(name)
