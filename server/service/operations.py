"""Service methods for idempotent POSTs, the readiness ping and the /metrics numbers."""

from __future__ import annotations

import time
from typing import Optional

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from ..db.models import IdempotencyRecord, Job, WorkerRow, now
from ..errors import Conflict, KeyReused
from .common import TenantInfo, tenant_id_of


PENDING_STALE_SECONDS = 300.0  # a claimed Idempotency-Key with no answer this long: its request died


def _record(tenant_id: str, scope: str, key: str) -> tuple:
    """The where-clause of one tenant's record for (scope, key), both cut to the columns' 200 characters."""
    return (IdempotencyRecord.tenant_id == tenant_id, IdempotencyRecord.scope == scope[:200],
            IdempotencyRecord.key == key[:200])


class OperationsService:
    """Idempotent POSTs, the readiness ping and the /metrics numbers.

    One part of `Service`: it uses the service's settings, db, storage and dispatcher, and the other
    parts' methods, through self."""

    # -- idempotent POSTs (identities, photos; jobs and batches keep the key on their row) ---------
    def idempotent_claim(self, tenant: "TenantInfo | str", scope: str, key: str, fingerprint: Optional[str] = None,
                         wait: float = 10.0) -> Optional[tuple[int, dict]]:
        """Take this key for a request about to run (None: it is ours now; answer with idempotent_store, or
        give it back with idempotent_release), or the first answer to replay (status, body). A concurrent
        retry waits up to `wait` seconds for the first request's answer, then gets 409
        `idempotency_in_progress`; the key with another request is KeyReused (422). The unique index makes
        exactly one of any number of concurrent requests the one that runs."""
        tid = tenant_id_of(tenant)
        deadline = time.monotonic() + wait
        while True:
            try:
                with self.db.session(immediate=True) as s:
                    s.add(IdempotencyRecord(tenant_id=tid, scope=scope[:200], key=key[:200], status=0, body={},
                                            fingerprint=fingerprint))
                return None
            except IntegrityError:
                pass
            with self.db.session() as s:
                rec = s.scalars(select(IdempotencyRecord).where(*_record(tid, scope, key))).first()
                if rec is None:
                    continue  # released meanwhile: claim it again
                if fingerprint and rec.fingerprint and rec.fingerprint != fingerprint:
                    raise KeyReused(f"Idempotency-Key {key[:60]!r} was first sent with another request to {scope}; "
                                    "use a new key for a new request", details={"key": key[:200]})
                if rec.status:
                    return rec.status, rec.body
                stale = now() - rec.created_at > PENDING_STALE_SECONDS
            if stale:  # its request died without an answer (a killed server process): take the key over
                self.idempotent_release(tid, scope, key)
                continue
            if time.monotonic() > deadline:
                raise Conflict(f"a request with Idempotency-Key {key[:60]!r} is still running; retry in a moment",
                               code="idempotency_in_progress", details={"key": key[:200], "retry_after": 1})
            time.sleep(0.05)

    def idempotent_store(self, tenant: "TenantInfo | str", scope: str, key: Optional[str], status: int,
                         body: dict, fingerprint: Optional[str] = None) -> None:
        """The claimed key's answer, for every retry to replay."""
        if not key:
            return
        with self.db.session(immediate=True) as s:
            s.execute(update(IdempotencyRecord).where(*_record(tenant_id_of(tenant), scope, key))
                      .values(status=status, body=body).execution_options(synchronize_session=False))

    def idempotent_release(self, tenant: "TenantInfo | str", scope: str, key: str) -> None:
        """Give a claimed key back (its request failed: a retry runs it afresh)."""
        with self.db.session(immediate=True) as s:
            s.execute(delete(IdempotencyRecord).where(*_record(tenant_id_of(tenant), scope, key),
                                                      IdempotencyRecord.status == 0)
                      .execution_options(synchronize_session=False))

    def ping(self) -> bool:
        with self.db.session() as s:
            s.execute(select(1))
        return True

    def workers_alive(self) -> int:
        """Workers whose heartbeat is fresh: within twice the lease (an idle worker beats every few seconds)."""
        with self.db.engine.connect() as c:
            n = c.execute(select(func.count()).select_from(WorkerRow)
                          .where(WorkerRow.heartbeat_at > now() - 2 * self.settings.lease_seconds)).scalar_one()
            c.rollback()
        return int(n)

    def stats(self) -> dict:
        """Numbers for /metrics: jobs by state, queue depth, workers' heartbeats, stage durations."""
        with self.db.session() as s:
            by_state = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
            by_kind = [(k, st, n) for k, st, n in s.execute(
                select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)).all()]
            workers = [{"id": w.id, "device": w.device, "mode": w.mode, "heartbeat_at": w.heartbeat_at,
                        "job_id": w.job_id, "jobs_done": w.jobs_done} for w in s.scalars(select(WorkerRow))]
            oldest = s.scalar(select(func.min(Job.created_at)).where(Job.state == "queued"))
            timings = s.execute(select(Job.timings).where(Job.state == "succeeded")
                                .order_by(Job.finished_at.desc()).limit(1000)).scalars().all()
        stages: dict[str, list[float]] = {}
        for t in timings:
            for stage, sec in (t or {}).items():
                if isinstance(sec, (int, float)):
                    stages.setdefault(stage, []).append(float(sec))
        return {"jobs": {st: by_state.get(st, 0) for st in ("queued", "running", "succeeded", "failed", "cancelled")},
                "jobs_by_kind": by_kind, "queue_depth": by_state.get("queued", 0),
                "oldest_queued_age": (now() - oldest) if oldest else 0.0, "workers": workers,
                "stage_seconds": stages}
