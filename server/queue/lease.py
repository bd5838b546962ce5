"""The embedded queue: the jobs table held on leases. Also the row-level claim every dispatcher
(Celery included) goes through, so the job row stays the truth.

- claim: a conditional UPDATE (state 'queued' → 'running') inside BEGIN IMMEDIATE on SQLite, on a
  row picked with FOR UPDATE SKIP LOCKED on PostgreSQL; highest priority first, then oldest; jobs
  of tenants at their concurrency limit wait.
- heartbeat: extends the lease, records stage and progress, and reports a cancel request.
- reap: a running job whose lease ran out is requeued (its worker died), until max_attempts; then
  it fails with code `worker_lost`. A cancel-requested one ends `cancelled`.
- every write that ends a job is conditional on state='running' and the worker's id, so a terminal
  state never changes and a worker that lost its lease cannot overwrite the job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from ..db import Database
from ..db.models import VISITOR_PREFIX, Job, Result, Tenant, is_visitor_name, now
from ..errors import QueueFull

HEARTBEAT_OK, HEARTBEAT_CANCEL, HEARTBEAT_LOST = "ok", "cancel", "lost"


@dataclass(frozen=True)
class Claimed:
    """A claimed job, detached from any session."""

    id: str
    tenant_id: str
    identity_id: Optional[str]
    kind: str
    templates: list
    options: dict
    attempts: int
    max_attempts: int
    styles: list = field(default_factory=list)


def _claimed(job: Job) -> Claimed:
    return Claimed(job.id, job.tenant_id, job.identity_id, job.kind, list(job.templates or []),
                   dict(job.options or {}), job.attempts, job.max_attempts, list(job.styles or []))


def check_capacity(s: Session, settings, tenant_id: str, adding: int = 1) -> None:
    """QueueFull (429 `queue_full`) naming the cap `adding` more queued jobs would pass: the tenant's own
    (`max_queued_per_tenant`), all web visitors' together (`max_queued_web`, for a visitor), or the
    whole queue's (`max_queue_size`). One tenant, or the open form, can never fill the queue for others."""
    mine = _queued(s, Job.tenant_id == tenant_id)
    if mine + adding > settings.max_queued_per_tenant:
        raise QueueFull(f"you have {mine} jobs waiting, the limit per tenant is {settings.max_queued_per_tenant}; "
                        "retry when some have started", details={"cap": "tenant", "queued": mine,
                                                                 "limit": settings.max_queued_per_tenant})
    tenant = s.get(Tenant, tenant_id)
    if tenant is not None and is_visitor_name(tenant.name):
        visitors = _queued(s, Job.tenant_id.in_(select(Tenant.id).where(Tenant.name.like(VISITOR_PREFIX + "%"))))
        if visitors + adding > settings.max_queued_web:
            raise QueueFull(f"the web form's queue is full ({visitors} visitors' jobs waiting, limit "
                            f"{settings.max_queued_web}); retry in a few minutes",
                            details={"cap": "web_visitors", "queued": visitors, "limit": settings.max_queued_web})
    depth = queue_depth(s)
    if depth + adding > settings.max_queue_size:
        raise QueueFull(f"the queue is full ({depth} jobs waiting, limit {settings.max_queue_size}); retry later",
                        details={"cap": "all", "queued": depth, "limit": settings.max_queue_size})


def _queued(s: Session, where) -> int:
    return s.scalar(select(func.count()).select_from(Job).where(Job.state == "queued", where)) or 0


def queue_depth(s: Session) -> int:
    return s.scalar(select(func.count()).select_from(Job).where(Job.state == "queued")) or 0


def queue_position(s: Session, job: Job) -> Optional[int]:
    """0 = next to run; None unless queued."""
    if job.state != "queued":
        return None
    return s.scalar(select(func.count()).select_from(Job).where(
        Job.state == "queued",
        or_(Job.priority > job.priority, and_(Job.priority == job.priority, Job.created_at < job.created_at)),
    )) or 0


def _blocked_tenants(s: Session, default_limit: int) -> list[str]:
    running = dict(s.execute(select(Job.tenant_id, func.count()).where(Job.state == "running")
                             .group_by(Job.tenant_id)).all())
    if not running:
        return []
    limits = dict(s.execute(select(Tenant.id, Tenant.concurrency).where(Tenant.id.in_(list(running)))).all())
    return [t for t, n in running.items() if n >= (limits.get(t) or default_limit)]


def _take(s: Session, job_id: str, worker: str, lease_seconds: float, *, expired_ok: bool = False) -> bool:
    t = now()
    cond = Job.state == "queued"
    if expired_ok:  # Celery redelivery after a lost worker: take over a dead lease
        cond = or_(cond, and_(Job.state == "running", Job.lease_until < t, Job.attempts < Job.max_attempts,
                              Job.cancel_requested.is_(False)))
    res = s.execute(update(Job).where(Job.id == job_id, cond).values(
        state="running", worker=worker, attempts=Job.attempts + 1, lease_until=t + lease_seconds,
        heartbeat_at=t, started_at=func.coalesce(Job.started_at, t), updated_at=t,
    ).execution_options(synchronize_session=False))
    return res.rowcount == 1


def announce(db: Database, job_ids: Iterable[str]) -> None:
    """Tell the fleet's stream feeds these jobs changed (server.job_news), after the change committed."""
    news = getattr(db, "news", None)
    if news is not None:
        news.announce(list(job_ids))


def claim_next(db: Database, worker: str, *, lease_seconds: float, tenant_concurrency: int,
               kinds: Optional[Iterable[str]] = None) -> Optional[Claimed]:
    """Claim the next job for `worker`, or None when nothing can run now."""
    claimed = _claim_next(db, worker, lease_seconds=lease_seconds, tenant_concurrency=tenant_concurrency, kinds=kinds)
    if claimed is not None:
        announce(db, [claimed.id])
    return claimed


def _claim_next(db: Database, worker: str, *, lease_seconds: float, tenant_concurrency: int,
                kinds: Optional[Iterable[str]] = None) -> Optional[Claimed]:
    with db.session() as s:  # a cheap read first: an idle poll takes no write lock
        if s.scalar(select(Job.id).where(Job.state == "queued").limit(1)) is None:
            return None
    with db.session(immediate=db.is_sqlite) as s:
        q = select(Job).where(Job.state == "queued")
        blocked = _blocked_tenants(s, tenant_concurrency)
        if blocked:
            q = q.where(Job.tenant_id.not_in(blocked))
        if kinds is not None:
            q = q.where(Job.kind.in_(list(kinds)))
        q = q.order_by(Job.priority.desc(), Job.created_at).limit(1)
        if not db.is_sqlite:
            q = q.with_for_update(skip_locked=True, of=Job)
        job = s.scalars(q).first()
        if job is None:
            return None
        if not db.is_sqlite:
            # Serialise claims per tenant so the concurrency limit holds across workers.
            tenant = s.scalars(select(Tenant).where(Tenant.id == job.tenant_id).with_for_update()).one()
            running = s.scalar(select(func.count()).select_from(Job).where(
                Job.tenant_id == job.tenant_id, Job.state == "running")) or 0
            if running >= (tenant.concurrency or tenant_concurrency):
                return None
        if not _take(s, job.id, worker, lease_seconds):
            return None
        s.flush()
        s.refresh(job)
        return _claimed(job)


def claim_job(db: Database, job_id: str, worker: str, *, lease_seconds: float) -> Optional[Claimed]:
    """Claim one given job (a Celery delivery). None when it is terminal, or running under a live
    lease (a redelivered duplicate), or unknown."""
    claimed = _claim_job(db, job_id, worker, lease_seconds=lease_seconds)
    if claimed is not None:
        announce(db, [claimed.id])
    return claimed


def _claim_job(db: Database, job_id: str, worker: str, *, lease_seconds: float) -> Optional[Claimed]:
    with db.session(immediate=db.is_sqlite) as s:
        q = select(Job).where(Job.id == job_id)
        if not db.is_sqlite:
            q = q.with_for_update()
        job = s.scalars(q).first()
        if job is None or not _take(s, job_id, worker, lease_seconds, expired_ok=True):
            return None
        s.flush()
        s.refresh(job)
        return _claimed(job)


def heartbeat(db: Database, job_id: str, worker: str, *, lease_seconds: float,
              stage: Optional[str] = None, progress: Optional[float] = None) -> str:
    """Extend the lease; returns HEARTBEAT_OK, HEARTBEAT_CANCEL (cancel requested) or HEARTBEAT_LOST."""
    t = now()
    values: dict = {"lease_until": t + lease_seconds, "heartbeat_at": t, "updated_at": t}
    if stage is not None:
        values["stage"] = stage
    if progress is not None:
        p = float(min(max(progress, 0.0), 1.0))
        values["progress"] = case((Job.progress > p, Job.progress), else_=p)  # never backwards
    with db.session(immediate=True) as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.worker == worker, Job.state == "running")
                        .values(**values).execution_options(synchronize_session=False))
        if res.rowcount != 1:
            return HEARTBEAT_LOST
        cancel = s.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    if stage is not None or progress is not None:
        announce(db, [job_id])
    return HEARTBEAT_CANCEL if cancel else HEARTBEAT_OK


def finish(db: Database, job_id: str, worker: str, state: str, *, result: Optional[dict] = None,
           error: Optional[dict] = None, timings: Optional[dict] = None,
           results: Iterable[dict] = (), on_finish=None) -> bool:
    """End a running job held by `worker`. False (nothing written) when the worker lost it.

    `results` are Result rows' fields; `on_finish(session, job)` runs in the same transaction
    (photo verdicts, webhook deliveries)."""
    assert state in ("succeeded", "failed", "cancelled")
    t = now()
    values: dict = {"state": state, "finished_at": t, "updated_at": t, "lease_until": None}
    if state == "succeeded":
        values["progress"] = 1.0
    if result is not None:
        values["result"] = result
    if timings is not None:
        values["timings"] = timings
    if error:
        values.update(error_code=error.get("code"), error_message=error.get("message"),
                      error_details=error.get("details") or {})
    with db.session(immediate=True) as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.worker == worker, Job.state == "running")
                        .values(**values).execution_options(synchronize_session=False))
        if res.rowcount != 1:
            return False
        job = s.get(Job, job_id)
        for i, r in enumerate(results):
            s.add(Result(job_id=job_id, tenant_id=job.tenant_id, identity_id=job.identity_id, rank=i, **r))
        if on_finish is not None:
            on_finish(s, job)
    announce(db, [job_id])
    return True


def reap(db: Database) -> tuple[list[str], list[str]]:
    """Requeue running jobs whose lease ran out (or fail them after max_attempts).
    Returns (requeued ids, ended ids)."""
    t = now()
    with db.session() as s:  # cheap read first
        if s.scalar(select(Job.id).where(Job.state == "running", Job.lease_until < t).limit(1)) is None:
            return [], []
    requeued: list[str] = []
    ended: list[str] = []
    with db.session(immediate=db.is_sqlite) as s:
        q = select(Job).where(Job.state == "running", Job.lease_until < t)
        if not db.is_sqlite:
            q = q.with_for_update(skip_locked=True)
        for job in s.scalars(q).all():
            base = update(Job).where(Job.id == job.id, Job.state == "running", Job.lease_until < t)
            if job.cancel_requested:
                values = dict(state="cancelled", finished_at=t, lease_until=None, updated_at=t,
                              error_code="cancelled", error_message="cancelled (its worker stopped)")
                target = ended
            elif job.attempts < job.max_attempts:
                values = dict(state="queued", worker=None, lease_until=None, updated_at=t)
                target = requeued
            else:
                values = dict(state="failed", finished_at=t, lease_until=None, updated_at=t,
                              error_code="worker_lost",
                              error_message=(f"the worker running this job stopped responding (last: {job.worker}); "
                                             f"gave up after {job.attempts} attempts"),
                              error_details={"attempts": job.attempts, "worker": job.worker})
                target = ended
            if s.execute(base.values(**values).execution_options(synchronize_session=False)).rowcount == 1:
                target.append(job.id)
    announce(db, requeued + ended)
    return requeued, ended


def cancel(db: Database, tenant_id: str, job_id: str) -> Optional[str]:
    """Cancel one job of a tenant: a queued job ends `cancelled` at once, a running one is asked to stop
    (its worker's heartbeat sees the request). Returns the job's state after the call, None if unknown."""
    state = _cancel(db, tenant_id, job_id)
    if state is not None:
        announce(db, [job_id])
    return state


def _cancel(db: Database, tenant_id: str, job_id: str) -> Optional[str]:
    t = now()
    with db.session(immediate=True) as s:
        mine = and_(Job.id == job_id, Job.tenant_id == tenant_id)
        if s.execute(update(Job).where(mine, Job.state == "queued").values(
                state="cancelled", finished_at=t, updated_at=t, error_code="cancelled",
                error_message="cancelled before it started").execution_options(synchronize_session=False)).rowcount:
            return "cancelled"
        s.execute(update(Job).where(mine, Job.state == "running").values(cancel_requested=True, updated_at=t)
                  .execution_options(synchronize_session=False))
        return s.scalar(select(Job.state).where(mine))


def stale_queued(db: Database, older_than: float, limit: int = 500) -> list[tuple[str, int]]:
    """Queued jobs untouched for `older_than` seconds, marked as touched now: (id, priority) to publish
    again (fleet mode: a broker that lost its messages, e.g. Redis restarted without persistence,
    loses no job; a duplicate delivery is dropped at the claim)."""
    t = now()
    with db.session() as s:
        rows = s.execute(select(Job.id, Job.priority).where(Job.state == "queued", Job.updated_at < t - older_than)
                         .order_by(Job.priority.desc(), Job.created_at).limit(limit)).all()
    out = []
    for job_id, priority in rows:
        with db.session(immediate=True) as s:
            if s.execute(update(Job).where(Job.id == job_id, Job.state == "queued", Job.updated_at < t - older_than)
                         .values(updated_at=t).execution_options(synchronize_session=False)).rowcount == 1:
                out.append((job_id, priority))
    return out
