"""The web UI: static files (plain ES modules, no build step) served by the query service at `/`.

`mount(app)` makes the UI the router's *fallback*: Starlette calls `router.default` only when
no route matched, so every API route (`/api/v1/…`, Jaeger's `/api/…`, `/tempo/…`, `/docs`,
`/healthz`) wins whatever order the routes were added in. A path with a file extension is a
file under `static/`; any other GET is a page of the single-page app (`/traces/<id>`,
`/sessions/<id>`, …) and gets `index.html`, whose script reads the URL and draws that page.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

STATIC_DIR = Path(__file__).parent / "static"
INDEX = STATIC_DIR / "index.html"

# Trace content is untrusted: the scripts only ever set it as text, and this policy is the
# second lock (no inline or foreign scripts, no requests to other origins). Styles may be
# inline because the chart library positions its elements with style attributes.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                                "base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time (a cheap 304): an upgraded server never runs yesterday's scripts.
    "Cache-Control": "no-cache",
}
# Prefixes that belong to APIs: an unknown path there is a JSON 404, never the page.
API_PREFIXES = ("/api/", "/tempo/", "/docs", "/redoc", "/openapi.json")


class UiFiles:
    """ASGI app answering what no route matched: static files, else the page itself."""

    def __init__(self):
        self.files = StaticFiles(directory=STATIC_DIR)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if scope["method"] not in ("GET", "HEAD") or path.startswith(API_PREFIXES) or path in ("/api", "/tempo"):
            await JSONResponse({"detail": "Not Found"}, 404)(scope, receive, send)
            return
        response: Response
        if "." in path.rsplit("/", 1)[-1]:  # a file: /app.js, /vendor/uplot/uPlot.esm.js
            try:
                response = await self.files.get_response(path.lstrip("/"), scope)
            except HTTPException as exc:
                response = JSONResponse({"detail": exc.detail}, exc.status_code)
        else:
            response = FileResponse(INDEX, media_type="text/html")
        response.headers.update(SECURITY_HEADERS)
        await response(scope, receive, send)


def mount(app: FastAPI) -> None:
    """Serve the UI at `/` for every path no API route answers."""
    app.router.default = UiFiles()
