"""The FastAPI application: middleware, error pages, routers."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labkeep.errors import (
    AuthenticationFailed,
    LabkeepError,
    NotFound,
    StorageError,
    TooManyAttempts,
    UsageError,
)
from labkeep.keep import Keep
from labkeep.web.catchall import CatchAll
from labkeep.web.deps import SESSION_COOKIE, refuse_nul
from labkeep.web.limits import BodyLimit

HERE = Path(__file__).parent
#: seconds a request waits for an unreachable catalog before it is answered 503
WEB_CATALOG_RETRY = 2.0
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # share links carry their secret in the URL: never send it on as a Referer
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SecurityHeaders:
    """Security headers on every answer; ``private, no-store`` for what a session or a
    share link opened; the session cookie dropped when it no longer works.

    A pure ASGI middleware: it only edits the response's start message (Starlette's
    BaseHTTPMiddleware would run the app in a task group, wrap its errors in exception
    groups and cost every request an extra task).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                state = scope.get("state", {})
                if state.get("auth", "anonymous") in ("session", "share"):
                    headers.setdefault("Cache-Control", "private, no-store")
                if state.get("drop_cookie", False):
                    expired = Response()
                    expired.delete_cookie(SESSION_COOKIE, path=_root(scope) + "/")
                    headers.append("set-cookie", expired.headers["set-cookie"])
            await send(message)

        await self.app(scope, receive, with_headers)


def _root(scope: Scope) -> str:
    return str(scope.get("root_path") or "")


def wants_json(request: Request) -> bool:
    path = request.url.path[len(request.scope.get("root_path") or "") :]
    return path.startswith("/api/") or "application/json" in request.headers.get("accept", "")


def create_app(keep: Keep | str | os.PathLike[str] | None = None) -> FastAPI:
    """The web application for *keep* (a Keep, a keep folder, or found as the CLI does)."""
    base = keep if isinstance(keep, Keep) else Keep.open(keep)
    web = base.config.web
    app = FastAPI(
        title="labkeep",
        version=_version(),
        description="Research data management: projects, datasets, versions, files, "
        "sharing. Authenticate with 'Authorization: Bearer TOKEN' (labkeep token create).",
        root_path=web.root_path,
        openapi_url="/api/v1/openapi.json",
        # Swagger UI loads from a CDN, which the CSP (and offline servers) forbid
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(refuse_nul)],
    )
    app.state.keep = base
    app.add_middleware(CatchAll)  # inside SecurityHeaders: error answers get its headers
    app.add_middleware(SecurityHeaders)
    # outermost but for Starlette's own: bodies are bounded before anything reads them
    app.add_middleware(
        BodyLimit,
        json_bytes=web.max_json_bytes,
        form_bytes=web.max_form_bytes,
        upload_bytes=web.max_upload_bytes,
    )
    from labkeep.web.metrics import install as install_metrics

    install_metrics(app, base)  # outermost: times and counts every answer
    # the web waits for an unreachable catalog briefly, then answers 503 (clients retry)
    base.catalog.retry_seconds = min(base.catalog.retry_seconds, WEB_CATALOG_RETRY)

    @app.exception_handler(LabkeepError)
    async def labkeep_error(request: Request, exc: LabkeepError) -> Response:
        return error_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Unknown URLs and wrong methods: JSON for programs, the error page for people."""
        if wants_json(request):  # the API's error shape (ErrorOut), not FastAPI's
            code = {400: "usage", 404: "not-found", 405: "method-not-allowed", 413: "too-large"}
            record = {
                "status": "error",
                "error": code.get(exc.status_code, "http"),
                "message": str(exc.detail),
            }
            return JSONResponse(record, status_code=exc.status_code, headers=exc.headers)
        from labkeep.web.pages import error_page

        error = (
            NotFound("no such page") if exc.status_code == 404 else LabkeepError(str(exc.detail))
        )
        error.http_status = exc.status_code
        return error_page(request, error, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        """A request that does not fit the route's parameters: the API's error shape with
        each field and what is wrong with it, never the values sent."""
        fields = validation_problems(exc)
        if wants_json(request):
            error = UsageError(
                "the request is not valid: "
                + "; ".join(f"{f['field']}: {f['problem']}" for f in fields[:5]),
                hint="see the API's description at /api/v1/openapi.json",
            )
            record = {**error.as_record(), "fields": fields}
            return JSONResponse(record, status_code=422)
        from labkeep.web.pages import error_page

        error = UsageError("the request was not understood: check the form or the address")
        error.http_status = 422
        return error_page(request, error, {})

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        """200 when the catalog answers at the expected schema and the tree is there;
        503 with the reason otherwise (for load balancers and monitoring)."""
        try:
            base.catalog.check_schema()
            if not base.tree.base.is_dir():
                raise StorageError(f"the tree folder {base.tree.base} is missing")
        except LabkeepError as exc:
            return JSONResponse(exc.as_record(), status_code=503, headers={"Retry-After": "5"})
        return JSONResponse({"status": "ok"})

    from labkeep.web.api import router as api_router
    from labkeep.web.api_extract import router as extract_router
    from labkeep.web.api_jobs import router as jobs_router
    from labkeep.web.api_meta import router as meta_router
    from labkeep.web.api_runs import router as runs_router
    from labkeep.web.api_search import router as search_router
    from labkeep.web.ui import router as ui_router

    app.include_router(api_router)
    app.include_router(jobs_router)
    app.include_router(meta_router)
    app.include_router(runs_router)
    app.include_router(extract_router)
    app.include_router(search_router)
    app.include_router(ui_router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    if _has_dav():
        from labkeep.web.dav import mount

        mount(app, base)
    return app


def validation_problems(exc: RequestValidationError, most: int = 20) -> list[dict[str, str]]:
    """Where and what, from pydantic's errors: no input values (they may be huge, secret
    or not even text)."""
    problems = []
    for error in exc.errors()[:most]:
        where = ".".join(str(part) for part in error.get("loc", ()))
        problems.append({"field": where[:200], "problem": str(error.get("msg", ""))[:200]})
    return problems


def error_response(request: Request, exc: LabkeepError) -> Response:
    """*exc* as the documented JSON error shape for programs, the error page for people."""
    headers: dict[str, str] = {}
    if isinstance(exc, TooManyAttempts):
        headers["Retry-After"] = str(exc.retry_after)
    elif exc.http_status == 503:
        headers["Retry-After"] = "5"
    if isinstance(exc, AuthenticationFailed) and wants_json(request):
        headers["WWW-Authenticate"] = "Bearer"
    if wants_json(request):
        return JSONResponse(exc.as_record(), status_code=exc.http_status, headers=headers)
    from labkeep.web.pages import error_page

    return error_page(request, exc, headers)


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory`` with several workers: the keep comes from LABKEEP_ROOT."""
    return create_app(os.environ.get("LABKEEP_ROOT"))


def _has_dav() -> bool:
    """Whether WebDAV can be served (the ``dav`` extra: WsgiDAV and a2wsgi)."""
    import importlib.util

    return all(importlib.util.find_spec(name) for name in ("wsgidav", "a2wsgi"))


def _version() -> str:
    from labkeep import __version__

    return __version__
