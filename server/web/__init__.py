"""The upload-and-wait web form (server-rendered HTML and a little vanilla JavaScript, no build step).

Each visitor works as their own tenant (created on the first visit and kept in the signed session
cookie), so their identities and jobs are invisible to every other visitor and API key; with
`web_auth = key` a visitor signs in with an API key and works as that key's tenant, seeing only
what their own session created. `web_auth = password` asks for `PORTRAIT_WEB_PASSWORD` first. Every
POST carries a CSRF token (Flask-WTF); the API blueprint is exempt (it authenticates by header)."""

from __future__ import annotations

from flask import Flask
from flask_wtf.csrf import CSRFProtect

from ..front_settings import FrontSettings
from ..settings import Settings


def init_app(app: Flask, settings: Settings, front: FrontSettings) -> None:
    from .views import bp

    # The open form's POSTs are limited per client address (a new cookie is a new visitor, so a per-tenant
    # count would not hold); the API's limiter, made by init_api, counts them.
    from flask_limiter.util import get_remote_address

    limiter = app.extensions["portrait.limiter"]
    limiter.limit(lambda: front.web_rate_limit, key_func=lambda: "web:" + (get_remote_address() or "unknown"),
                  methods=["POST"])(bp)
    app.register_blueprint(bp)
    csrf = CSRFProtect()
    csrf.init_app(app)
    csrf.exempt(app.blueprints["api"])
    app.extensions["portrait.csrf"] = csrf
