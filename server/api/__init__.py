"""The REST API blueprint (`/api/v1`): JSON, `Authorization: Bearer KEY`, one tenant's data per key.

The OpenAPI 3.1 document at `/api/v1/openapi.json` is built by flask-smorest from the routes and
their marshmallow schemas (server/api/schemas.py)."""

from __future__ import annotations

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_smorest import Api

from ..front_settings import FrontSettings
from ..settings import Settings

API_PREFIX = "/api/v1"


def rate_key() -> str:
    """Requests are counted per tenant: a valid API key counts against its tenant (every key of a tenant
    shares one count), anything else against the client address, so rotating made-up keys is limited
    like sending none. The authenticated tenant is kept on `g` for the route."""
    from flask import current_app, g

    from ..errors import ServiceError

    if "tenant" in g:  # already authenticated for this request (the limiter asks once per limit)
        return "tenant:" + g.tenant.id
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and key.strip():
        try:
            g.tenant = current_app.extensions["portrait"].authenticate(key.strip())
            return "tenant:" + g.tenant.id
        except ServiceError:  # a wrong or revoked key: the route answers 401, counted per address
            pass
    return "addr:" + (get_remote_address() or "unknown")


class PortraitApi(Api):
    """flask-smorest's Api with our error body as the documented default error."""

    from .schemas import ErrorBody as ERROR_SCHEMA  # noqa: N811


def init_app(app: Flask, settings: Settings, front: FrontSettings) -> None:
    from .routes import blp

    app.config.update(
        API_TITLE="portrait",
        API_VERSION="1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX=API_PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
    )
    api = PortraitApi(app, spec_kwargs={"info": {"description": (
        "Studio portraits from a person's ordinary photos. Create an identity, upload its photos, "
        "submit a job, poll it (or follow its events), fetch the results. Every error is "
        '{"error": {"code", "message", "details"}}. See docs/api.md for the mini-program flow.')}})
    api.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer",
                                                   "description": "an API key from `portrait tenant create`"})
    api.spec.options["security"] = [{"bearer": []}]
    api.register_blueprint(blp)
    app.extensions["portrait.api"] = api

    storage = front.rate_limit_storage_url or (settings.broker_url if settings.broker_url.startswith("redis")
                                               else "memory://")
    # moving window: "N per minute" is N in any 60 s, never 2N across a minute boundary (a fixed window
    # resets on the clock's minute, so a burst at :59 and :00 passed twice the limit)
    limiter = Limiter(key_func=rate_key, storage_uri=storage, headers_enabled=True,
                      strategy="moving-window")
    limiter.init_app(app)
    limiter.limit(lambda: front.rate_limit, key_func=rate_key)(blp)
    app.extensions["portrait.limiter"] = limiter
