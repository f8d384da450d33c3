"""The DrawingBot web app (FastAPI): the page at ``/`` and the JSON API under ``/api``.

    POST /api/generate  {"caption": str, "seed": int | null, "n": int, "same_noise": bool}
                        -> DrawingEngine.generate's result (200)
    GET  /api/health    -> {"status": "ok", "model": ..., "device": ..., "limits": ...}
    GET  /              -> the page (static/index.html; its script and style from /static/)

Every error is JSON, ``{"error": {"code": ..., "message": ...}}``, never a traceback: 400 for a
body that is not JSON, 411 without Content-Length, 413 for a body over ``MAX_BODY_BYTES``, 422 for
a request that is not valid (missing or wrong fields, empty or too long caption, no known word, n
too large), 404 / 405 for other routes and methods, 503 when the server is full, 500 (details in
the server log only) for a failure of the model. Swagger's /docs pages are off (they load scripts
from a CDN); the OpenAPI schema is at /openapi.json. The page loads nothing from elsewhere: its
Content-Security-Policy allows this server only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from attngan_fast.serve.engine import MAX_SEED, DrawingEngine, RequestError

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 64 * 1024
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class GenerateRequest(BaseModel):
    """The body of ``POST /api/generate``. Limits (n, caption length) are the engine's."""

    model_config = ConfigDict(extra="forbid")

    caption: str = Field(description="the sentence to draw")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="noise seed (null: a new one)")
    n: int = Field(1, ge=1, description="images to generate (one batch)")
    same_noise: bool = Field(
        True, description="use the seed's noise; false draws a new seed (returned)"
    )


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "invalid_json", "the request body is not valid JSON"
    parts = []
    for e in errors[:5]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return 422, "invalid_request", "; ".join(parts)


def create_app(engine: DrawingEngine) -> FastAPI:
    """The app serving ``engine``'s model (run it with uvicorn)."""
    app = FastAPI(
        title="attngan-fast DrawingBot",
        summary="Text to image with AttnGAN: every stage and each word's attention",
        docs_url=None,
        redoc_url=None,
    )
    app.state.engine = engine

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        if request.method in ("POST", "PUT", "PATCH"):
            length = request.headers.get("content-length")
            if length is None:
                return error_response(411, "length_required", "send a Content-Length header")
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                return error_response(
                    413, "body_too_large", f"the request body is over {MAX_BODY_BYTES} bytes"
                )
        return await call_next(request)

    @app.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> JSONResponse:
        response = error_response(exc.status, exc.code, exc.message)
        if exc.status == 503:
            response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(*_validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises the exception after this response: the server logs the traceback.
        return error_response(500, "internal", "generation failed; the server log has details")

    @app.post("/api/generate")
    async def generate(body: GenerateRequest) -> JSONResponse:
        result = await run_in_threadpool(
            engine.generate, body.caption, body.n, body.seed, body.same_noise
        )
        return JSONResponse(result)

    @app.get("/api/health")
    async def health() -> dict:
        return {"status": "ok", **engine.info()}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        response = FileResponse(STATIC / "index.html", media_type="text/html")
        response.headers["Content-Security-Policy"] = PAGE_POLICY
        return response

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
