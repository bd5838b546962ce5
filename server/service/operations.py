"""Service methods for idempotent POSTs, the readiness ping and the /metrics numbers."""

from __future__ import annotations

from typing import Optional

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..db.models import IdempotencyRecord, Job, WorkerRow, now
from ..errors import KeyReused
from .common import TenantInfo, tenant_id_of


class OperationsService:
    """Idempotent POSTs, the readiness ping and the /metrics numbers.

    One part of `Service`: it uses the service's settings, db, storage and dispatcher, and the other
    parts' methods, through self."""

    # -- idempotent POSTs (identities, photos; jobs and batches keep the key on their row) ---------
    def idempotent_replay(self, tenant: "TenantInfo | str", scope: str, key: Optional[str],
                          fingerprint: Optional[str] = None) -> Optional[tuple[int, dict]]:
        """The first answer to this key (status, body), or None; KeyReused (422) when the key first came
        with another request (`fingerprint`: a hash of the request's content)."""
        if not key:
            return None
        with self.db.session() as s:
            rec = s.scalars(select(IdempotencyRecord).where(IdempotencyRecord.tenant_id == tenant_id_of(tenant),
                                                            IdempotencyRecord.scope == scope,
                                                            IdempotencyRecord.key == key)).first()
            if rec is None:
                return None
            if fingerprint and rec.fingerprint and rec.fingerprint != fingerprint:
                raise KeyReused(f"Idempotency-Key {key[:60]!r} was first sent with another request to {scope}; "
                                "use a new key for a new request", details={"key": key[:200]})
            return rec.status, rec.body

    def idempotent_store(self, tenant: "TenantInfo | str", scope: str, key: Optional[str], status: int,
                         body: dict, fingerprint: Optional[str] = None) -> None:
        if not key:
            return
        try:
            with self.db.session(immediate=True) as s:
                s.add(IdempotencyRecord(tenant_id=tenant_id_of(tenant), scope=scope[:200], key=key[:200], status=status,
                                        body=body, fingerprint=fingerprint))
        except IntegrityError:
            pass  # a concurrent retry stored it first

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
