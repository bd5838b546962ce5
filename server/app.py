"""The Flask application factory: `create_app(config=None)`.

Blueprints are registered here (`api` under /api/v1, `web` for the form, `ops` for health and
metrics), extensions are wired through their `init_app`, and every error becomes
`{"error": {"code", "message", "details"}}` with its 4xx status (an HTML page on the form)."""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

from flask import Flask, g, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from portrait.errors import PortraitError

from .errors import BadRequest, BadSettings, ServiceError, error_response
from . import retention
from .front_settings import FrontSettings
from .settings import Settings

log = logging.getLogger(__name__)

# HTTP statuses raised by Flask / Werkzeug / the extensions, as stable error codes.
HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
    406: "not_acceptable", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
    422: "invalid", 429: "rate_limited",
}


def _split_config(config: Mapping[str, Any] | None) -> tuple[dict, dict, dict]:
    """(service settings, front settings, Flask's own keys such as TESTING)."""
    service_keys = {f.lower() for f in Settings.__dataclass_fields__}
    front_keys = FrontSettings.field_names()
    service, front, flask = {}, {}, {}
    for key, value in (config or {}).items():
        low = key.lower()
        if low in service_keys:
            service[low] = value
        elif low in front_keys:
            front[low] = value
        elif key.isupper():
            flask[key] = value
        else:
            raise BadSettings(f"unknown setting {key!r} (settings: {', '.join(sorted(service_keys | front_keys))})")
    return service, front, flask


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The WSGI application. `config` keys: any `Settings` / `FrontSettings` field (else read from
    `PORTRAIT_*` variables) and Flask's own upper-case keys (TESTING, WTF_CSRF_ENABLED, ...)."""
    service_cfg, front_cfg, flask_cfg = _split_config(config)
    settings = Settings.load(service_cfg)
    front = FrontSettings.load(front_cfg)
    app = Flask(__name__, instance_relative_config=False)
    app.config.update(
        SECRET_KEY=settings.resolved_secret_key(),
        MAX_CONTENT_LENGTH=front.max_request_bytes or 10 * settings.max_upload_bytes + 1024 * 1024,
        JSON_SORT_KEYS=False,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the visitor's session
    )
    app.config.update(flask_cfg)
    if front.proxy_hops:  # behind TLS-terminating proxies: signed result URLs must be https:// on the public host
        from werkzeug.middleware.proxy_fix import ProxyFix

        n = front.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n, x_prefix=n)
    app.extensions["portrait.settings"] = settings
    app.extensions["portrait.front"] = front

    from . import ops
    from .api import init_app as init_api
    from .present import signed_result_url
    from .service import Service
    from .web import init_app as init_web

    service = Service(settings)  # migrates the database on first use
    service.result_url = signed_result_url
    retention.sweep_cache_until_closed(service)  # no deleted identity stays in this machine's cache
    ops.init_app(app, service)  # /healthz, /readyz, /metrics; the service in app.extensions["portrait"]
    app.teardown_appcontext(_forget_request_state)
    app.before_request(_refuse_unstorable_json)  # before the API's and the form's parsers
    init_api(app, settings, front)
    init_web(app, settings, front)
    _register_error_handlers(app)
    return app


def _refuse_unstorable_json() -> None:
    """A JSON body whose strings cannot be stored (a lone UTF-16 surrogate such as "\\ud800", which no
    database encodes, or a NUL character, which PostgreSQL refuses) is a 400 naming the field, on every
    route, before anything reads it; a body that is not JSON at all is left to the route's parser."""
    if not request.is_json or not request.content_length:
        return
    body = request.get_json(silent=True)  # parsed once, kept for the route; invalid JSON: the route answers it
    where = _unstorable(body, "")
    if where is not None:
        raise BadRequest(f"field '{where or 'body'}' holds a character that cannot be stored (a lone UTF-16 "
                         "surrogate or NUL)", code="bad_string", details={"field": where or "body"})


def _unstorable(value, path: str) -> Optional[str]:
    """The first field path (a.b.0) holding an unstorable string, a key included; None when all are fine."""
    if isinstance(value, str):
        return path if "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if _unstorable(k, sub) is not None:
                return (path + "." if path else "") + "(a key)"
            found = _unstorable(v, sub)
            if found is not None:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _unstorable(v, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
    return None


def _forget_request_state(_exc=None) -> None:
    """Per-request state lives on `g` (the authenticated tenant); database sessions are opened and
    closed by each service call."""
    g.pop("tenant", None)


def wants_html() -> bool:
    """Error pages for the form's pages; JSON for the API and for the form's own fetch() calls."""
    if request.blueprint != "web":
        return False
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def error_body(status: int, code: str, message: str, details: dict | None = None):
    if wants_html():
        return render_template("web/error.html", status=status, code=code, message=message), status
    return jsonify({"error": {"code": code, "message": message, "details": details or {}}}), status


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    @app.errorhandler(PortraitError)
    def _typed(exc):
        status, body = error_response(exc)
        e = body["error"]
        response = error_body(status, e["code"], e["message"], e.get("details"))
        retry = (e.get("details") or {}).get("retry_after")
        if retry:  # a busy server says when to come back (503 too_many_streams)
            response[0].headers["Retry-After"] = str(int(retry))
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        status = exc.code or 500
        details = {}
        data = getattr(exc, "data", None)  # webargs / flask-smorest validation messages
        if isinstance(data, dict) and data.get("messages"):
            details = {"fields": data["messages"]}
        message = exc.description or exc.name
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"the request body is larger than {limit} bytes" if limit else message
        code = HTTP_CODES.get(status, "http_error" if status < 500 else "internal")
        if isinstance(exc, CSRFError):
            code = "csrf_failed"
        if status == 422:  # a body or query that fails its schema: a bad request naming the field
            status, code, message = 400, "invalid", "invalid request: " + _flatten(details.get("fields"))
        response = error_body(status, code, message, details)
        if status == 429 and hasattr(exc, "limit"):
            response[0].headers["Retry-After"] = "60"
        if status == 405 and getattr(exc, "valid_methods", None):  # RFC 9110: a 405 says what is allowed
            response[0].headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return response

    @app.errorhandler(Exception)
    def _bug(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_body(500, "internal", f"unexpected {type(exc).__name__} (please report this)")


def _flatten(messages, prefix: str = "") -> str:
    """webargs' nested {"json": {"templates": {"0": ["Not a valid string."]}}} as one readable line."""
    if not messages:
        return "malformed request"
    if isinstance(messages, list):
        return f"{prefix.rstrip('.')}: {' '.join(str(m) for m in messages)}" if prefix else " ".join(map(str, messages))
    parts = []
    for key, value in messages.items():
        sub = "" if key in ("json", "query", "form", "files", "headers") else f"{prefix}{key}."
        parts.append(_flatten(value, sub))
    return "; ".join(parts)
