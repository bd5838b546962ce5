"""Service methods for a studio's batches (one job per row, one priority)."""

from __future__ import annotations

from typing import Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import TERMINAL_STATES, Batch, Job, new_id, now
from ..errors import BadRequest, KeyReused, NotFound, ServiceError
from ..queue import lease
from .common import BATCH_PRIORITY, MAX_BATCH_ROWS, TenantInfo, by_idempotency_key, iso, log, tenant_id_of


class BatchesService:
    """A studio's batches: one job per row, under one priority.

    One part of `Service`: it uses the service's settings, db, storage and dispatcher, and the other
    parts' methods, through self."""

    def submit_batch(self, tenant: "TenantInfo | str", rows: list, *, name: str = "",
                     priority: int = BATCH_PRIORITY, idempotency_key: Optional[str] = None,
                     webhook_url: Optional[str] = None, internal: bool = False) -> dict:
        """One job per row (`{"kind"="run", "identity_id", "templates", "styles", "options"}`) under one batch id.
        Every row is validated first: one bad row is a 400 naming it, and nothing is queued."""
        tenant_id = tenant_id_of(tenant)
        if not isinstance(rows, list) or not rows:
            raise BadRequest("rows must be a non-empty list", code="bad_rows", details={"field": "rows"})
        if len(rows) > MAX_BATCH_ROWS:
            raise BadRequest(f"at most {MAX_BATCH_ROWS} rows per batch", code="bad_rows", details={"rows": len(rows)})
        with self.db.session(immediate=True) as s:
            old = by_idempotency_key(s, Batch, tenant_id, idempotency_key)
            if old is not None:
                # A retry gets the first batch; the key with other rows is refused (as for jobs). The rows are the
                # work: a retry that leaves the batch's name out is still the same batch.
                before = [(j.kind, j.identity_id, list(j.templates or []), list(j.styles or []), dict(j.options or {}))
                          for j in s.scalars(
                    select(Job).where(Job.batch_id == old.id).order_by(Job.created_at))]
                asked = [(r.get("kind", "run"), r.get("identity_id"), list(r.get("templates") or []),
                          list(r.get("styles") or []), dict(r.get("options") or {})) if isinstance(r, dict) else r
                         for r in rows]
                if before != asked:
                    raise KeyReused(f"Idempotency-Key {idempotency_key[:60]!r} was first sent with another batch; "
                                    "use a new key for a new batch", details={"key": idempotency_key,
                                                                              "batch_id": old.id})
                return self._batch_dict(s, old)
            checked = []
            for i, row in enumerate(rows):
                if not isinstance(row, dict):
                    raise BadRequest(f"row {i} is not an object", code="bad_rows", details={"row": i})
                unknown = sorted(set(row) - {"kind", "identity_id", "templates", "styles", "options", "priority"})
                if unknown:
                    raise BadRequest(f"row {i}: unknown field(s) {', '.join(unknown)}", code="bad_rows",
                                     details={"row": i})
                try:
                    checked.append(self.validate_job(s, tenant_id, row.get("kind", "run"), row.get("identity_id"),
                                                     row.get("templates"), row.get("options"),
                                                     row.get("priority", priority), webhook_url,
                                                     internal=internal, styles=row.get("styles")))
                except ServiceError as exc:
                    exc.details = {"row": i, **exc.details}
                    exc.message = f"row {i}: {exc.message}"
                    exc.args = (exc.message,)
                    raise
            lease.check_capacity(s, self.settings, tenant_id, adding=len(checked))
            batch = Batch(id=new_id(), tenant_id=tenant_id, name=(name or "")[:200], idempotency_key=idempotency_key)
            s.add(batch)
            s.flush()
            t = now()
            jobs = [Job(id=new_id(), tenant_id=tenant_id, batch_id=batch.id, max_attempts=self.settings.max_attempts,
                        created_at=t + i * 1e-6, **f) for i, f in enumerate(checked)]
            s.add_all(jobs)
        self.dispatcher.publish([(j.id, j.priority) for j in jobs])
        log.info("batch queued", extra={"tenant": tenant_id, "batch": batch.id, "jobs": len(jobs)})
        with self.db.session() as s:
            return self._batch_dict(s, s.get(Batch, batch.id))

    def get_batch(self, tenant: "TenantInfo | str", batch_id: str) -> dict:
        with self.db.session() as s:
            b = s.get(Batch, batch_id) if isinstance(batch_id, str) else None
            if b is None or b.tenant_id != tenant_id_of(tenant):
                raise NotFound(f"no batch {str(batch_id)[:64]!r}", code="batch_not_found")
            return self._batch_dict(s, b)

    def _batch_dict(self, s: Session, b: Batch) -> dict:
        jobs = s.scalars(select(Job).where(Job.batch_id == b.id).order_by(Job.created_at)).all()
        counts = {st: 0 for st in ("queued", "running", "succeeded", "failed", "cancelled")}
        for j in jobs:
            counts[j.state] = counts.get(j.state, 0) + 1
        progress = sum(1.0 if j.state in TERMINAL_STATES else float(j.progress or 0) for j in jobs) / max(1, len(jobs))
        return {"id": b.id, "name": b.name, "created_at": iso(b.created_at), "progress": round(progress, 4),
                "done": all(j.state in TERMINAL_STATES for j in jobs), "counts": counts,
                "jobs": [{"id": j.id, "row": i, "identity_id": j.identity_id, "state": j.state, "stage": j.stage or None,
                          "progress": round(float(j.progress or 0), 4),
                          "error": ({"code": j.error_code, "message": j.error_message} if j.error_code else None)}
                         for i, j in enumerate(jobs)]}
