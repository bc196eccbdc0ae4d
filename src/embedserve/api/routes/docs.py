"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) served from assets vendored in the package, so the API docs work on
a machine without internet access (FastAPI's defaults load them from a CDN). Licences: ``api/static/vendor``."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from embedserve import errors

router = APIRouter(tags=["docs"], include_in_schema=False)

VENDOR = "/static/vendor"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
TITLE = "embedserve API"


@cache
def _read(name: str) -> bytes:
    return files("embedserve.api").joinpath("static", "vendor", name).read_bytes()


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{TITLE} - Swagger UI",
        swagger_js_url=f"{VENDOR}/swagger-ui-bundle.js",
        swagger_css_url=f"{VENDOR}/swagger-ui.css",
        swagger_favicon_url=f"{VENDOR}/favicon-32x32.png",
    )


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title=f"{TITLE} - ReDoc",
        redoc_js_url=f"{VENDOR}/redoc.standalone.js",
        redoc_favicon_url=f"{VENDOR}/favicon-32x32.png",
        with_google_fonts=False,
    )


@router.get(VENDOR + "/{name}")
async def vendored_asset(name: str) -> Response:
    if name not in ASSETS:
        raise errors.NotFoundError(f"No static file '{name}' on this server.")
    return Response(_read(name), media_type=ASSETS[name], headers={"Cache-Control": "public, max-age=86400"})
