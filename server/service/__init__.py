"""The service layer: everything the API, the web form and the CLI do, as plain functions over the
database, the storage and the queue, one module per resource (tenants, identities, jobs, batches,
operations), joined here into one `Service`. Routes parse a request, call one method, return its dict.

Every method that takes a `tenant` (a `TenantInfo` or a tenant id) only ever sees that tenant's
rows: another tenant's id is `NotFound`, exactly like an id that does not exist.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Mapping, Optional

from ..db import Database
from ..queue import Dispatcher, make_dispatcher
from ..settings import Settings
from ..storage import Storage, make_storage
from .tenants import TenantsService
from .identities import IdentitiesService
from .jobs import JobsService
from .batches import BatchesService
from .operations import OperationsService
from .common import TenantInfo, find_report, hash_key


__all__ = ["Service", "TenantInfo", "find_report", "hash_key"]  # the worker and the CLI import these here


class Service(TenantsService, IdentitiesService, JobsService, BatchesService, OperationsService):
    """One per process (the app and every worker build their own from the same settings)."""

    def __init__(self, settings: Settings, *, db: Optional[Database] = None, storage: Optional[Storage] = None,
                 dispatcher: Optional[Dispatcher] = None, migrate: bool = True):
        self.settings = settings
        self.closing = threading.Event()
        self.db = db or Database(settings.db_url)
        if settings.broker_url.startswith(("redis://", "rediss://")) and self.db.news is None:
            from ..job_news import JobNews

            self.db.news = JobNews(settings.broker_url)  # progress streams in every server process hear at once
        elif self.db.dialect == "postgresql" and self.db.news is None:
            from ..job_news import PgJobNews

            self.db.news = PgJobNews(self.db.engine)  # the same, over the database's LISTEN / NOTIFY
        self.storage = storage or make_storage(settings.data_dir, settings.storage_url, settings.storage_endpoint_url,
                                                  settings.storage_cache_hours)
        self.dispatcher = dispatcher or make_dispatcher(settings)
        # The API sets this to build (signed) result URLs: result id -> URL.
        self.result_url: Optional[Callable[[str], str]] = None
        if migrate:
            self.db.migrate()

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None = None, **kwargs) -> "Service":
        return cls(Settings.load(config), **kwargs)

    def close(self) -> None:
        self.closing.set()  # background loops of this service (the web side's cache sweep) end
        self.db.dispose()
