"""Settings of the front half (REST API and web form): rate limits, signed URLs, the form's access
control. Like `server.settings.Settings`, each comes from `create_app(config)` (key = field name,
any case) or the environment (`PORTRAIT_<NAME>`), the mapping winning."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Mapping

from .errors import BadSettings

WEB_AUTH_MODES = ("none", "password", "key")


@dataclass(frozen=True)
class FrontSettings:
    rate_limit: str = "3000 per minute"  # API requests per tenant (or per address without a valid key): 50/s
    web_rate_limit: str = "30 per minute"  # the web form's POSTs (new identity, uploads, submit) per address
    rate_limit_storage_url: str = ""  # "" = memory:// on one machine, the broker's Redis in fleet mode
    signed_url_seconds: int = 3600  # life of a signed result URL (a mini-program <image src>)
    max_request_bytes: int = 0  # one request body; 0 = 10 photos at max_upload_bytes
    page_size: int = 50  # default page of a list (cursor pagination); `limit` can ask up to 200
    sse_poll_seconds: float = 0.5  # how often an event stream looks at its job
    sse_max_seconds: float = 3600.0  # an event stream closes after this; the client reconnects
    sse_max_streams: int = 4  # under a plain WSGI server (each stream holds a request thread there): event
    #                           streams open at once per process; beyond it 503 too_many_streams
    sse_max_async_streams: int = 10000  # the same under `portrait serve`, where a stream is a coroutine
    web_auth: str = "none"  # none | password | key: what the web form asks before it is used
    web_password: str = ""
    web_refresh_seconds: int = 2  # the no-JavaScript status page refreshes itself this often
    proxy_hops: int = 0  # reverse proxies in front that set X-Forwarded-*: URLs then use the client's scheme/host

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @classmethod
    def load(cls, config: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> "FrontSettings":
        env = os.environ if env is None else env
        config = {k.lower(): v for k, v in (config or {}).items()}
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = "PORTRAIT_" + f.name.upper()
            if f.name in config:
                raw, where = config[f.name], f.name
            elif key in env:
                raw, where = env[key], key
            else:
                continue
            try:
                values[f.name] = type(f.default)(raw)
            except (TypeError, ValueError) as exc:
                raise BadSettings(f"{where}: {raw!r} is not a valid {type(f.default).__name__}") from exc
        s = cls(**values)
        if s.web_auth not in WEB_AUTH_MODES:
            raise BadSettings(f"web_auth must be one of {', '.join(WEB_AUTH_MODES)}, got {s.web_auth!r}")
        if s.web_auth == "password" and not s.web_password:
            raise BadSettings("web_auth = password needs PORTRAIT_WEB_PASSWORD")
        if s.signed_url_seconds < 1 or s.page_size < 1:
            raise BadSettings("signed_url_seconds and page_size must be at least 1")
        return s
