"""The worker: a long-lived process that runs jobs through `portrait.jobs`, one at a time, keeping
its models loaded between jobs (the job layer caches them per process).

- embedded mode: polls the jobs table and claims rows on leases (`queue.lease`);
- celery mode: a Celery worker (solo pool, prefetch 1) whose task claims the delivered job's row.

While a job runs, a heartbeat thread extends the lease, writes the stage and the overall progress
(never backwards) and turns a cancel request on the row into the job's `cancel` event. A worker
that lost its lease (it was presumed dead and the job requeued) stops the job and writes nothing.
Maintenance (every few seconds, in every worker): reap dead leases, send due webhooks, apply
retention, record this worker's heartbeat.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Optional

from sqlalchemy import delete, select, update

from portrait.errors import PortraitError

from . import kinds as job_kinds
from . import retention, runner, webhooks
from .db.models import Job, WorkerRow, now
from .queue import lease
from .queue.lease import Claimed
from .service import Service, find_report
from .service.common import upload_names, user_text
from .settings import Settings

log = logging.getLogger("portrait.worker")
MAINTENANCE_SECONDS = 2.0
RETENTION_SECONDS = 600.0
STALE_WORKER_SECONDS = 3600.0
PROGRESS_SECONDS = 1.0  # a running job's progress reaches the row at least this often


class ProgressTracker:
    """The job layer's progress(stage, done, total) → the job's stage, overall 0..1 fraction (via
    `portrait.jobs.OverallProgress` for public kinds), and per-stage durations."""

    def __init__(self, kind: str, fraction=None):
        self.kind = kind
        self._fraction = fraction
        self.stage: Optional[str] = None
        self.progress = 0.0
        self.timings: dict[str, float] = {}
        self._stage_started = time.monotonic()
        self.changed = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            t = time.monotonic()
            if stage != self.stage:
                self._close_stage(t)
                self.stage = stage
                self._stage_started = t
                self.changed.set()  # a new stage is written at once
            if self._fraction is not None:
                self._fraction(stage, done, total)
                p = float(self._fraction.fraction)
            else:
                p = done / total if total else 0.0
            self.progress = max(self.progress, min(max(p, 0.0), 1.0))

    def _close_stage(self, t: float) -> None:
        if self.stage is not None:
            self.timings[self.stage] = round(self.timings.get(self.stage, 0.0) + t - self._stage_started, 4)

    def finish(self) -> dict:
        with self._lock:
            self._close_stage(time.monotonic())
            self.stage = None
            return dict(self.timings)


def overall_progress(kind: str):
    """The job layer's OverallProgress for `kind` (a callable keeping `.fraction` and `.stage`)."""
    try:
        from portrait.jobs import OverallProgress
    except ImportError:  # pragma: no cover - the job layer is part of the library
        return None
    try:
        return OverallProgress(kind)
    except ValueError:
        return None


class Worker:
    def __init__(self, settings: Settings, *, device: str = "cpu", service: Optional[Service] = None,
                 mode: Optional[str] = None):
        self.settings = settings
        self.device = device
        self.service = service or Service(settings)
        self.db = self.service.db
        self.storage = self.service.storage
        self.mode = mode or ("celery" if settings.fleet else "embedded")
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.stop_event = threading.Event()
        self._last_maintenance = 0.0
        self._last_redispatch = 0.0
        self._maintenance_lock = threading.Lock()
        self._last_retention = 0.0
        self._last_cache_sweep = 0.0
        self._current: Optional[str] = None
        self._pool = None
        self.jobs_done = 0

    def _analysis_pool(self, kind: str):
        """The preprocess analysis processes (face models loaded once), created at the first job that
        analyses photos and kept for the worker's life."""
        k = job_kinds.KINDS.get(kind)
        if k is None or not k.pool:
            return None
        if self._pool is None:
            from preprocess.workers import WorkerPool

            self._pool = WorkerPool(2)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- lifecycle -------------------------------------------------------------------------------
    def register(self) -> None:
        with self.db.session(immediate=True) as s:
            s.merge(WorkerRow(id=self.id, host=socket.gethostname(), pid=os.getpid(), device=self.device,
                              mode=self.mode, started_at=now(), heartbeat_at=now(), job_id=None, jobs_done=0))
        log.info("worker started", extra={"worker": self.id, "kind": self.mode})

    def unregister(self) -> None:
        with self.db.session(immediate=True) as s:
            row = s.get(WorkerRow, self.id)
            if row is not None:
                s.delete(row)
        log.info("worker stopped", extra={"worker": self.id, "jobs": self.jobs_done})

    def _beat_row(self) -> None:
        with self.db.session(immediate=True) as s:
            s.execute(update(WorkerRow).where(WorkerRow.id == self.id).values(
                heartbeat_at=now(), job_id=self._current, jobs_done=self.jobs_done))

    def start_maintenance(self) -> threading.Thread:
        """Maintenance every MAINTENANCE_SECONDS in a background thread, also while a long job runs
        (webhook retries, reaping other workers' dead leases, retention, this worker's heartbeat)."""
        def loop():
            while not self.stop_event.wait(MAINTENANCE_SECONDS):
                self.maintenance()

        th = threading.Thread(target=loop, name="maintenance", daemon=True)
        th.start()
        return th

    def maintenance(self, force: bool = False) -> None:
        """Reap dead leases (Celery: publish the requeued ids again), webhooks, retention, own heartbeat."""
        with self._maintenance_lock:
            t = time.monotonic()
            if not force and t - self._last_maintenance < MAINTENANCE_SECONDS / 2:
                return
            self._last_maintenance = t
            self._maintain(t, force)

    def _maintain(self, t: float, force: bool) -> None:
        try:
            requeued, ended = lease.reap(self.db)
            if requeued or ended:
                log.warning("reaped dead leases", extra={"requeued": requeued, "ended": ended, "worker": self.id})
            if requeued and self.mode == "celery":
                with self.db.session() as s:
                    prio = dict(s.execute(select(Job.id, Job.priority).where(Job.id.in_(requeued))).all())
                self.service.dispatcher.publish([(j, prio.get(j, 0)) for j in requeued])
            if self.mode == "celery" and (force or t - self._last_redispatch > self.settings.redispatch_seconds / 4):
                self._last_redispatch = t
                again = lease.stale_queued(self.db, self.settings.redispatch_seconds)
                if again:
                    log.warning("queued jobs published again", extra={"jobs": len(again), "worker": self.id})
                    self.service.dispatcher.publish(again)
            webhooks.deliver_due(self.db, max_attempts=self.settings.webhook_attempts,
                                 backoff=self.settings.webhook_backoff,
                                 allow_private=self.settings.webhook_allow_private)
            if force or t - self._last_retention > RETENTION_SECONDS:
                self._last_retention = t
                retention.apply_retention(self.service)
            if force or t - self._last_cache_sweep > retention.CACHE_SWEEP_SECONDS:
                self._last_cache_sweep = t
                retention.forget_deleted_in_cache(self.service)
            self._beat_row()
            with self.db.session(immediate=True) as s:  # workers gone for an hour leave /metrics
                s.execute(delete(WorkerRow).where(WorkerRow.heartbeat_at < now() - STALE_WORKER_SECONDS))
        except Exception:  # the database may be briefly away: log, keep serving
            log.exception("maintenance failed", extra={"worker": self.id})

    # -- embedded loop ---------------------------------------------------------------------------
    def run_forever(self, *, max_jobs: Optional[int] = None, idle_exit: Optional[float] = None) -> int:
        """Claim and run jobs until stopped (or `max_jobs` done, or idle for `idle_exit` seconds)."""
        self.register()
        self.maintenance(force=True)
        self.start_maintenance()
        idle_since = time.monotonic()
        try:
            while not self.stop_event.is_set():
                claimed = lease.claim_next(self.db, self.id, lease_seconds=self.settings.lease_seconds,
                                           tenant_concurrency=self.settings.tenant_concurrency)
                if claimed is None:
                    if idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                        break
                    self.stop_event.wait(self.settings.poll_interval)
                    continue
                self.execute(claimed)
                idle_since = time.monotonic()
                if max_jobs is not None and self.jobs_done >= max_jobs:
                    break
        finally:
            self.stop_event.set()  # ends the maintenance thread
            self.maintenance(force=True)  # this worker's own webhooks go out before it exits
            self.unregister()
            self.close()
        return self.jobs_done

    # -- celery ----------------------------------------------------------------------------------
    def run_claimed(self, job_id: str) -> None:
        """A Celery delivery: claim that job's row and run it, or drop a duplicate."""
        claimed = lease.claim_job(self.db, job_id, self.id, lease_seconds=self.settings.lease_seconds)
        if claimed is None:
            log.info("delivery dropped (job finished or held by a live lease)", extra={"job": job_id,
                                                                                     "worker": self.id})
            return
        self.execute(claimed)

    # -- one job ---------------------------------------------------------------------------------
    def execute(self, job: Claimed) -> str:
        """Run a claimed job to its end; returns the state written ('lost' if the lease was lost)."""
        ctx = {"job": job.id, "tenant": job.tenant_id, "identity": job.identity_id, "kind": job.kind,
               "worker": self.id, "attempt": job.attempts}
        log.info("job started", extra=ctx)
        self._current = job.id
        out_dir = self.storage.job_dir(job.tenant_id, job.id)
        if job.attempts > 1:  # a retry starts from a clean folder
            shutil.rmtree(out_dir, ignore_errors=True)
            out_dir.mkdir(parents=True, exist_ok=True)
        cancel = threading.Event()
        tracker = ProgressTracker(job.kind, None if job.kind.startswith("_") else overall_progress(job.kind))
        done = threading.Event()
        lost = threading.Event()
        hb = threading.Thread(target=self._heartbeat_loop, args=(job, tracker, cancel, done, lost),
                              name=f"heartbeat-{job.id[:8]}", daemon=True)
        hb.start()
        state, result, error = "failed", None, None
        try:
            result = runner.run(self.service, job, out_dir, device=self.device, progress=tracker, cancel=cancel,
                                pool=self._analysis_pool(job.kind))
            state = "succeeded"
        except PortraitError as exc:
            d = exc.to_dict()
            code = d.pop("error", exc.code)
            message = d.pop("message", str(exc))
            state = "cancelled" if code == "cancelled" else "failed"
            names = self.service.photo_names(job.identity_id)
            data_dir = self.settings.data_dir
            error = {"code": code, "message": user_text(message, names, data_dir, out_dir),
                     "details": _relative(upload_names(d, names), out_dir)}
        except Exception as exc:  # a bug: reported as `internal`, never retried
            log.exception("job crashed", extra=ctx)
            error = {"code": "internal", "message": f"unexpected {type(exc).__name__}: {exc} (please report this)",
                     "details": {}}
        finally:
            done.set()
            hb.join()
        timings = tracker.finish()
        if lost.is_set():
            log.warning("lease lost: result discarded", extra=ctx)
            self._forget_if_deleted(job)
            self._current = None
            return "lost"
        rows = runner.output_rows(out_dir, result) if state == "succeeded" else []
        try:  # before the row says the job ended, its files (report.json of a failed job too) are where readers look
            self.storage.publish_job(job.tenant_id, job.id)
        except Exception as exc:  # the object store is unreachable or refused: the job's files are not stored
            log.exception("publishing the job's files failed", extra=ctx)
            state, rows = "failed", []
            error = {"code": "storage_unavailable", "details": {},
                     "message": f"the job's files could not be stored ({type(exc).__name__}); please try again"}

        def on_finish(s, row: Job) -> None:
            runner.apply_report(s, row, find_report(out_dir))
            payload = {"job": {"id": row.id, "kind": row.kind, "state": row.state, "identity_id": row.identity_id,
                               "batch_id": row.batch_id,
                               "error": error, "results": len(rows)}}
            webhooks.enqueue_for_job(s, row, payload)

        written = lease.finish(self.db, job.id, self.id, state, result=_jsonable(result, out_dir), error=error,
                               timings=timings, results=rows, on_finish=on_finish)
        if not written:
            self._forget_if_deleted(job)
        self._current = None
        self.jobs_done += 1
        log.info("job ended", extra={**ctx, "state": state if written else "lost",
                                     "code": error["code"] if error else None,
                                     "seconds": round(sum(timings.values()), 3)})
        return state if written else "lost"

    def _forget_if_deleted(self, job: Claimed) -> None:
        """The job's row is gone (its identity was deleted while it ran): so are the files it wrote since."""
        with self.db.session() as s:
            gone = s.get(Job, job.id) is None
        if gone:
            self.storage.delete_job(job.tenant_id, job.id)
            log.info("job deleted while running: its files removed", extra={"job": job.id, "tenant": job.tenant_id})

    def _heartbeat_loop(self, job: Claimed, tracker: ProgressTracker, cancel: threading.Event,
                        done: threading.Event, lost: threading.Event) -> None:
        interval = self.settings.heartbeat_seconds
        next_beat = 0.0
        logged_stage = None
        while not done.is_set():
            t = time.monotonic()
            if t >= next_beat or tracker.changed.is_set():
                tracker.changed.clear()
                if tracker.stage != logged_stage:
                    logged_stage = tracker.stage
                    log.info("stage", extra={"job": job.id, "tenant": job.tenant_id, "stage": logged_stage,
                                             "worker": self.id})
                try:
                    res = lease.heartbeat(self.db, job.id, self.id, lease_seconds=self.settings.lease_seconds,
                                          stage=tracker.stage, progress=tracker.progress)
                except Exception:
                    log.exception("heartbeat failed", extra={"job": job.id, "worker": self.id})
                    res = lease.HEARTBEAT_OK
                if res == lease.HEARTBEAT_CANCEL and not cancel.is_set():
                    log.info("cancel requested", extra={"job": job.id, "worker": self.id})
                    cancel.set()
                elif res == lease.HEARTBEAT_LOST:
                    lost.set()
                    cancel.set()
                    return
                next_beat = time.monotonic() + min(interval, PROGRESS_SECONDS)
            done.wait(0.05)


def _relative(d: dict, out_dir: Path) -> dict:
    """Error details without the server's paths (a job's own files are named relative to its folder)."""
    out = {}
    base = str(out_dir.resolve())
    for k, v in d.items():
        if isinstance(v, str) and v.startswith("/"):
            v = v[len(base) + 1:] if v.startswith(base + "/") else Path(v).name
        out[k] = v
    return out


def _jsonable(result: Optional[dict], out_dir: Path) -> Optional[dict]:
    import json

    if result is None:
        return None
    base = str(out_dir.resolve()) + "/"
    text = json.dumps(result, default=str).replace(base, "")
    return json.loads(text)
