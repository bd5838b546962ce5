"""Signed, expiring result URLs: a mini-program's `<image src>` cannot send an Authorization header,
so a result's URL carries a token naming the result (a random 128-bit id), signed with the server's secret
key (itsdangerous, HMAC-SHA1 over the payload and a timestamp) and refused after
`signed_url_seconds`."""

from __future__ import annotations

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from .errors import NotFound, Unauthorized

SALT = "portrait.result-url"


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def sign_result(result_id: str) -> str:
    return _serializer().dumps(result_id)


def verify_result(token: str, result_id: str) -> None:
    """Unauthorized when the token has expired; NotFound when it is forged or names another result."""
    max_age = current_app.extensions["portrait.front"].signed_url_seconds
    try:
        rid = _serializer().loads(token, max_age=max_age)
    except SignatureExpired:
        raise Unauthorized("this result URL has expired: fetch the job again for a fresh one",
                           code="url_expired") from None
    except (BadSignature, ValueError, TypeError):
        raise NotFound(f"result {result_id} not found") from None
    if rid != result_id:
        raise NotFound(f"result {result_id} not found")
