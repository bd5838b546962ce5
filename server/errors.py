"""Typed service errors: each has a stable `code` and an HTTP `status`. The API turns any of them
(and any `portrait.errors.PortraitError`) into `{"error": {"code", "message", "details"}}`."""

from __future__ import annotations

from typing import Any

from portrait.errors import ImageError, PortraitError


class ServiceError(Exception):
    code = "error"
    status = 400

    def __init__(self, message: str, *, details: dict[str, Any] | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code:
            self.code = code

    def to_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(ServiceError):
    code, status = "bad_request", 400


class BadSettings(ServiceError):
    code, status = "bad_settings", 500


class Unauthorized(ServiceError):
    code, status = "unauthorized", 401


class NotFound(ServiceError):
    """Also what another tenant's ids give: 404, never 403."""

    code, status = "not_found", 404


class Conflict(ServiceError):
    code, status = "conflict", 409


class TooLarge(ServiceError):
    code, status = "too_large", 413


class RejectedUpload(ServiceError):
    """Every file of an upload request was refused at intake (not an image, unreadable)."""

    code, status = "unreadable", 422


class KeyReused(ServiceError):
    """An Idempotency-Key sent again with another request: the first answer belongs to the first request."""

    code, status = "idempotency_key_reused", 422


class TooManyPhotos(ServiceError):
    code, status = "too_many_photos", 409


class QueueFull(ServiceError):
    code, status = "queue_full", 429


class StorageUnavailable(ServiceError):
    """The object store is unreachable or refused a request: try again later."""

    code, status = "storage_unavailable", 503


def error_response(exc: BaseException) -> tuple[int, dict]:
    """(HTTP status, body) for a service error or a library error; 500 `internal` otherwise."""
    if isinstance(exc, ServiceError):
        return exc.status, exc.to_dict()
    if isinstance(exc, PortraitError):
        d = exc.to_dict()
        code = d.pop("error", exc.code)
        message = d.pop("message", str(exc))
        status = 413 if isinstance(exc, ImageError) and code == "too_large" else 400
        return status, {"error": {"code": code, "message": message, "details": d}}
    return 500, {"error": {"code": "internal", "message": f"unexpected {type(exc).__name__} (please report this)",
                           "details": {}}}
