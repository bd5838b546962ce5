"""Retention: a tenant's identities (photos, crops, identity files, job files, results) are deleted
once they have been idle for the tenant's TTL (`retention_days`, default the server's, 30 days).
Idle = no upload and no job since. Jobs without an identity, old idempotency records and webhook
deliveries expire the same way. Run by the workers (`Worker.maintenance`)."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import delete, func, select

from .db.models import (VISITOR_PREFIX, ApiKey, Batch, IdempotencyRecord, Identity, Job, Tenant, WebhookDelivery,
                        is_visitor_name, now)
from .storage import Storage

log = logging.getLogger("portrait.retention")
IDEMPOTENCY_SECONDS = 24 * 3600


def expired_identities(service, at: float | None = None) -> list[tuple[str, str, list[str]]]:
    """(tenant id, identity id, job ids) of identities idle past their tenant's TTL, with no live job."""
    at = now() if at is None else at
    out = []
    with service.db.session() as s:
        tenants = s.execute(select(Tenant.id, Tenant.retention_days)).all()
        for tenant_id, days in tenants:
            cutoff = at - 86400.0 * (days if days is not None else service.settings.retention_days)
            last_job = (select(Job.identity_id, func.max(Job.created_at).label("last"))
                        .where(Job.tenant_id == tenant_id).group_by(Job.identity_id).subquery())
            rows = s.execute(select(Identity.id, Identity.updated_at, last_job.c.last)
                             .outerjoin(last_job, last_job.c.identity_id == Identity.id)
                             .where(Identity.tenant_id == tenant_id, Identity.updated_at < cutoff)).all()
            for ident, updated, last in rows:
                if last is not None and last >= cutoff:
                    continue
                live = s.scalar(select(func.count()).select_from(Job).where(
                    Job.identity_id == ident, Job.state.in_(("queued", "running")))) or 0
                if live:
                    continue
                jobs = list(s.scalars(select(Job.id).where(Job.identity_id == ident)))
                out.append((tenant_id, ident, jobs))
    return out


def apply_retention(service, at: float | None = None) -> int:
    """Delete what is past its TTL; returns how many identities were deleted."""
    at = now() if at is None else at
    doomed = expired_identities(service, at)
    for tenant_id, ident, jobs in doomed:
        service.purge_identity(tenant_id, ident, jobs)
    with service.db.session(immediate=True) as s:
        tenants = s.execute(select(Tenant.id, Tenant.retention_days)).all()
        orphan_jobs = []
        for tenant_id, days in tenants:
            cutoff = at - 86400.0 * (days if days is not None else service.settings.retention_days)
            orphan_jobs += [(tenant_id, j) for j in s.scalars(select(Job.id).where(
                Job.tenant_id == tenant_id, Job.identity_id.is_(None), Job.created_at < cutoff,
                Job.state.in_(("succeeded", "failed", "cancelled"))))]
            s.execute(delete(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant_id,
                                                    WebhookDelivery.created_at < cutoff))
        if orphan_jobs:
            s.execute(delete(WebhookDelivery).where(WebhookDelivery.job_id.in_([j for _, j in orphan_jobs])))
            s.execute(delete(Job).where(Job.id.in_([j for _, j in orphan_jobs])))
        s.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < at - IDEMPOTENCY_SECONDS))
    for tenant_id, j in orphan_jobs:
        service.storage.delete_job(tenant_id, j)
    visitors = prune_visitors(service, at)
    if doomed or orphan_jobs or visitors:
        log.info("retention", extra={"deleted": len(doomed), "jobs": len(orphan_jobs), "tenants": visitors})
    return len(doomed)


def prune_visitors(service, at: float) -> int:
    """Delete web form visitors' tenants (db.models.is_visitor_name) older than the TTL that hold no
    identity, job or batch any more; returns how many. API tenants are never pruned."""
    cutoff = at - 86400.0 * service.settings.retention_days
    with service.db.session(immediate=True) as s:
        rows = s.execute(select(Tenant.id, Tenant.name).where(Tenant.name.like(f"{VISITOR_PREFIX}%"),
                                                              Tenant.created_at < cutoff)).all()
        empty = [tid for tid, name in rows if is_visitor_name(name) and not any(
            s.scalar(select(func.count()).select_from(t).where(t.tenant_id == tid)) for t in (Identity, Job, Batch))]
        for table in (ApiKey, IdempotencyRecord, WebhookDelivery):
            s.execute(delete(table).where(table.tenant_id.in_(empty)))
        s.execute(delete(Tenant).where(Tenant.id.in_(empty)))
    for tid in empty:
        service.storage.delete_tenant(tid)
    return len(empty)


CACHE_SWEEP_SECONDS = 10.0  # how soon a deletion made elsewhere leaves this machine's cache


def sweep_cache_until_closed(service, every: float = CACHE_SWEEP_SECONDS) -> threading.Thread | None:
    """For a process with no worker (a web-only machine): forget_deleted_in_cache now and every `every`
    seconds in a daemon thread until the service closes. None where the storage keeps no cache."""
    if type(service.storage).cached is Storage.cached:  # the data dir is the store: nothing cached
        return None

    def loop() -> None:
        while True:
            try:
                forget_deleted_in_cache(service)
            except Exception:  # the database may be briefly away: try again next round
                log.exception("cache sweep failed")
            if service.closing.wait(every):
                return

    th = threading.Thread(target=loop, name="cache-sweep", daemon=True)
    th.start()
    return th


def forget_deleted_in_cache(service) -> int:
    """Drop this machine's cached copies of identities and jobs that no longer exist (deleted on another
    machine, whose delete cleared the store and its own cache only): no cache keeps a deleted identity's
    photos, crops or portraits. Returns how many folders went."""
    cached = service.storage.cached()
    if not cached:
        return 0
    ids = {kind: {c[2] for c in cached if c[0] == kind} for kind in ("identities", "jobs")}
    with service.db.session() as s:
        live = {"identities": set(s.scalars(select(Identity.id).where(Identity.id.in_(ids["identities"])))),
                "jobs": set(s.scalars(select(Job.id).where(Job.id.in_(ids["jobs"]))))}
    gone = 0
    for kind, _tenant, row_id, folder in cached:
        if row_id not in live[kind]:
            service.storage.drop_cached(folder)
            gone += 1
    if gone:
        log.info("deleted rows' cached files dropped", extra={"deleted": gone})
    return gone
