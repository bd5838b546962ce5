"""Service settings: one frozen object built from a mapping (tests, create_app(config)) and the
environment (`PORTRAIT_*`). The mapping wins over the environment, which wins over the defaults."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import BadSettings

ENV_PREFIX = "PORTRAIT_"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("portrait-data")
    database_url: str = ""  # "" = sqlite:///<data_dir>/portrait.db (WAL)
    broker_url: str = ""  # "" = the embedded queue (the jobs table); redis://... = Celery
    secret_key: str = ""  # "" = a random key kept in <data_dir>/secret_key
    storage_url: str = ""  # "" = files in the data dir; s3://BUCKET/PREFIX = an object store (+ <data_dir>/cache)
    storage_endpoint_url: str = ""  # "" = boto3's usual endpoint; http(s)://... for MinIO / S3-compatible stores
    storage_cache_hours: float = 24.0  # with storage_url: a cached folder unused this long is dropped from the cache
    # Limits
    max_upload_bytes: int = 25 * 1024 * 1024  # one uploaded photo
    max_photos_per_identity: int = 40
    max_pixels: int = 64_000_000
    max_queue_size: int = 1000  # queued jobs, all tenants together (the last guard)
    max_queued_per_tenant: int = 500  # queued jobs of one tenant (a studio's 500-row batch fits), so no
    #                                   tenant can fill the queue for the others
    max_queued_web: int = 20  # queued jobs of all web form visitors together (each visitor is a tenant)
    tenant_concurrency: int = 2  # running jobs per tenant
    max_attempts: int = 3  # a job whose worker died is tried this many times in all
    lease_seconds: float = 60.0  # a worker's hold on a running job, renewed by heartbeats
    retention_days: float = 30.0  # default per-tenant TTL of photos, identities and results
    poll_interval: float = 0.05  # an idle embedded worker looks for queued jobs this often
    visibility_timeout: int = 6 * 3600  # Celery/Redis: above the longest training job
    redispatch_seconds: float = 900.0  # Celery: a job queued this long untouched is published again
    webhook_attempts: int = 5
    webhook_backoff: float = 2.0  # seconds before the first retry, doubled after each
    webhook_allow_private: bool = False  # webhooks to private / loopback addresses (a receiver on your own network)
    queue_name: str = "portrait"

    def __post_init__(self) -> None:
        # Resolved once, at start: a relative data dir would otherwise be read against whatever folder a
        # library resolves it from (Flask resolves file paths against the app's package: every thumbnail 500'd).
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().absolute())

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(Path(self.data_dir) / 'portrait.db').resolve()}"

    @property
    def fleet(self) -> bool:
        return bool(self.broker_url)

    @property
    def heartbeat_seconds(self) -> float:
        return max(0.2, min(10.0, self.lease_seconds / 4))

    @classmethod
    def load(cls, config: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> "Settings":
        """Settings from `config` (keys are field names, any case), then `PORTRAIT_<NAME>` variables."""
        env = os.environ if env is None else env
        config = {k.lower(): v for k, v in (config or {}).items()}
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(k for k in config if k not in known)
        if unknown:
            raise BadSettings(f"unknown setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, f in known.items():
            if name in config:
                raw, where = config[name], name
            elif ENV_PREFIX + name.upper() in env:
                raw, where = env[ENV_PREFIX + name.upper()], ENV_PREFIX + name.upper()
            else:
                continue
            values[name] = _coerce(f.default, raw, where)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        for name in ("max_upload_bytes", "max_photos_per_identity", "max_pixels", "max_queue_size",
                     "max_queued_per_tenant", "max_queued_web", "tenant_concurrency", "max_attempts", "webhook_attempts"):
            if getattr(self, name) < 1:
                raise BadSettings(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lease_seconds", "retention_days", "poll_interval", "redispatch_seconds", "storage_cache_hours"):
            if getattr(self, name) <= 0:
                raise BadSettings(f"{name} must be positive, got {getattr(self, name)}")
        if self.broker_url and not self.broker_url.startswith(("redis://", "rediss://", "memory://")):
            raise BadSettings(f"PORTRAIT_BROKER_URL must be redis://..., got {self.broker_url!r}")
        if self.storage_url:
            from .storage import parse_storage_url

            parse_storage_url(self.storage_url)  # raises BadSettings naming what is wrong
        if self.storage_endpoint_url and not self.storage_endpoint_url.startswith(("http://", "https://")):
            raise BadSettings("PORTRAIT_STORAGE_ENDPOINT_URL must be an http(s):// URL, "
                              f"got {self.storage_endpoint_url!r}")
        if self.storage_endpoint_url and not self.storage_url:
            raise BadSettings("PORTRAIT_STORAGE_ENDPOINT_URL is set but PORTRAIT_STORAGE_URL is not: "
                              "set PORTRAIT_STORAGE_URL=s3://BUCKET/PREFIX to use an object store")

    def resolved_secret_key(self) -> str:
        """The configured key, or one generated once and kept in the data dir (mode 600)."""
        if self.secret_key:
            return self.secret_key
        path = Path(self.data_dir) / "secret_key"
        if not path.exists():
            Path(self.data_dir).mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process wrote it first
                fd = None
            if fd is not None:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_hex(32))
        for _ in range(50):  # the writer may not have finished
            key = path.read_text().strip()
            if key:
                return key
            time.sleep(0.01)
        raise BadSettings(f"{path} is empty: delete it or set PORTRAIT_SECRET_KEY")

    def with_(self, **changes: Any) -> "Settings":
        from dataclasses import replace

        return replace(self, **changes)


def _coerce(default: Any, raw: Any, where: str) -> Any:
    try:
        if isinstance(default, Path):
            return Path(raw).expanduser()
        if isinstance(default, bool):
            return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise BadSettings(f"{where}: {raw!r} is not a valid {type(default).__name__}") from exc
