"""The web UI of a query node: one HTML shell at ``/``, its static files, and plotly.js.

Nothing comes from the internet at run time. The pages are plain files in
``runstream/web`` (vanilla JS modules, no build step); plotly.js is read from the installed
``plotly`` Python package, gzipped once in memory and served with a versioned URL so the
browser keeps it. Routes in the page are hash routes (``/#/run/<id>``), so every deep link
is served by ``/``.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from functools import lru_cache
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from runstream import __version__

router = APIRouter(include_in_schema=False)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml"}
# The page may talk to its own origin only, and run only its own scripts (no inline script).
# 'unsafe-eval': plotly's WebGL traces (parallel coordinates) compile shaders' glue code with
# new Function (regl); without it plotly reports "WebGL is not supported".
_CSP = ("default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'")


class _Asset:
    """A file's bytes, its gzip and an ETag, read once."""

    def __init__(self, data: bytes, media_type: str) -> None:
        self.data = data
        self.gzipped = gzip.compress(data, compresslevel=6) if len(data) > 1024 else None
        self.media_type = media_type
        self.etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'

    def response(self, request: Request, cache: str) -> Response:
        headers = {"ETag": self.etag, "Cache-Control": cache, "Vary": "Accept-Encoding",
                   "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        if self.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(self.gzipped, media_type=self.media_type, headers=headers)
        return Response(self.data, media_type=self.media_type, headers=headers)


@lru_cache(maxsize=1)
def _plotly() -> tuple[str, _Asset]:
    """plotly.js from the installed ``plotly`` package (its own copy of the bundle)."""
    try:
        import plotly  # noqa: F401 - only to find the package
    except ImportError as exc:  # pragma: no cover - a dependency of runstream
        raise HTTPException(503, "the plotly package is not installed") from exc
    bundle = resources.files("plotly") / "package_data" / "plotly.min.js"
    data = bundle.read_bytes()
    version = hashlib.sha256(data).hexdigest()[:12]
    return version, _Asset(data, _TYPES[".js"])


_assets: dict[Path, tuple[float, _Asset]] = {}


def _asset(path: Path) -> _Asset:
    """A static file, re-read when it changes on disk (cheap ``stat`` per request)."""
    mtime = path.stat().st_mtime
    cached = _assets.get(path)
    if cached is None or cached[0] != mtime:
        media = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        cached = (mtime, _Asset(path.read_bytes(), media))
        _assets[path] = cached
    return cached[1]


def _index_html() -> bytes:
    version, _ = _plotly()
    text = (WEB_DIR / "index.html").read_text(encoding="utf-8")
    return (text.replace("{{PLOTLY_URL}}", f"/ui/vendor/plotly-{version}.min.js")
                .replace("{{VERSION}}", __version__)).encode()


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> Response:
    asset = _Asset(_index_html(), _TYPES[".html"])
    response = asset.response(request, "no-cache")
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["Referrer-Policy"] = "same-origin"
    return response


@router.get("/ui")
@router.get("/ui/")
def ui_root() -> RedirectResponse:
    return RedirectResponse("/", status_code=307)


@router.get("/ui/vendor/plotly-{version}.min.js")
def plotly_js(version: str, request: Request) -> Response:
    current, asset = _plotly()
    if version != current:
        return RedirectResponse(f"/ui/vendor/plotly-{current}.min.js", status_code=307)
    return asset.response(request, "public, max-age=31536000, immutable")


@router.get("/ui/static/{path:path}")
def static(path: str, request: Request) -> Response:
    root = WEB_DIR.resolve()
    file = (root / path).resolve()
    if root not in file.parents or not file.is_file() or file.name == "index.html":
        raise HTTPException(404, "no such file")
    # Revalidated on every load (an ETag makes it a 304): a new version shows at once.
    return _asset(file).response(request, "no-cache")
