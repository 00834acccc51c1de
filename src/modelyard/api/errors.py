"""The edge: the one place where exceptions become JSON error responses, and the body limit."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard.errors import InvalidInput, MalformedJson, ModelyardError, PayloadTooLarge

log = logging.getLogger("modelyard.api")


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


async def _modelyard_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ModelyardError)
    if exc.http_status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.message)
    body = exc.to_dict()
    return error_response(exc.http_status, body.pop("code"), body.pop("message"), **body)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, MalformedJson.code, "the request body is not valid JSON")
    problems = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        message = str(e.get("msg", "")).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return error_response(422, InvalidInput.code, "; ".join(problems) or "invalid request")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
    message = str(exc.detail) if exc.status_code != 404 else f"no route {request.url.path}"
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), message)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    error_id = uuid.uuid4().hex[:12]
    log.exception("unhandled error %s on %s %s", error_id, request.method, request.url.path)
    return error_response(
        500, "internal", f"internal error {error_id}: it is in the server log", error_id=error_id
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ModelyardError, _modelyard_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = (
            f"request body is over the limit of {self.max_bytes} bytes: upload large "
            "files straight to the blob store (the upload plan gives the location)"
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await error_response(413, PayloadTooLarge.code, message)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge(message)
            return msg

        await self.app(scope, limited, send)
