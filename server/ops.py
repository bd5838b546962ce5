"""The `ops` blueprint: `/healthz` (the process answers), `/readyz` (the database answers and is
migrated; in fleet mode the broker answers too; and how many workers have a fresh heartbeat) and Prometheus `/metrics` (jobs by state and kind,
queue depth and age, stage durations, worker heartbeats), read from the database at scrape time so
every server process reports the same numbers whichever workers there are.

`init_app(app, service=None)` registers it; the service is `app.extensions["portrait"]`
(create_app puts it there) unless given.
"""

from __future__ import annotations

import threading
import time

from flask import Blueprint, Flask, current_app, jsonify

bp = Blueprint("ops", __name__)
CACHE_SECONDS = 1.0


def init_app(app: Flask, service=None) -> None:
    if service is not None:
        app.extensions["portrait"] = service
    app.extensions["portrait_ops"] = {"lock": threading.Lock(), "at": 0.0, "text": b""}
    app.register_blueprint(bp)


def _service():
    return current_app.extensions["portrait"]


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    svc = _service()
    checks = {}
    try:
        svc.ping()
        from .db import MIGRATIONS

        head = sorted(p.name.split("_")[0] for p in (MIGRATIONS / "versions").glob("*.py"))[-1]
        rev = svc.db.revision()
        checks["database"] = "ok" if rev == head else f"at revision {rev}, expected {head}"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    if svc.settings.fleet:
        try:
            import redis

            redis.Redis.from_url(svc.settings.broker_url, socket_timeout=2).ping()
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"unavailable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    body = {"status": "ok" if ok else "unavailable", "checks": checks}
    if checks.get("database") == "ok":
        # Not a readiness check (this process serves whether or not a worker runs), but said: with none alive,
        # jobs wait in the queue until one starts.
        alive = svc.workers_alive()
        body["workers_alive"] = alive
        if not alive:
            body["note"] = "no worker is running: jobs wait in the queue until `portrait worker` starts"
    return jsonify(body), (200 if ok else 503)


@bp.get("/metrics")
def metrics():
    from prometheus_client import CONTENT_TYPE_LATEST

    cache = current_app.extensions["portrait_ops"]
    with cache["lock"]:
        if time.monotonic() - cache["at"] > CACHE_SECONDS:
            cache["text"] = render_metrics(_service())
            cache["at"] = time.monotonic()
        text = cache["text"]
    return text, 200, {"Content-Type": CONTENT_TYPE_LATEST}


def render_metrics(service) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily

    st = service.stats()
    t = time.time()

    class _Collector:
        def collect(self):
            g = GaugeMetricFamily("portrait_jobs", "Jobs by state", labels=["state"])
            for state, n in st["jobs"].items():
                g.add_metric([state], n)
            yield g
            g = GaugeMetricFamily("portrait_jobs_by_kind", "Jobs by kind and state", labels=["kind", "state"])
            for kind, state, n in st["jobs_by_kind"]:
                g.add_metric([kind, state], n)
            yield g
            yield GaugeMetricFamily("portrait_queue_depth", "Jobs waiting in the queue", value=st["queue_depth"])
            yield GaugeMetricFamily("portrait_queue_oldest_seconds", "Age of the oldest queued job",
                                    value=st["oldest_queued_age"])
            s = SummaryMetricFamily("portrait_stage_duration_seconds",
                                    "Time spent per job stage (last 1000 succeeded jobs)", labels=["stage"])
            for stage, secs in sorted(st["stage_seconds"].items()):
                s.add_metric([stage], count_value=len(secs), sum_value=sum(secs))
            yield s
            hb = GaugeMetricFamily("portrait_worker_heartbeat_age_seconds", "Seconds since each worker's last heartbeat",
                                   labels=["worker", "device", "mode"])
            busy = GaugeMetricFamily("portrait_worker_busy", "1 while the worker runs a job",
                                     labels=["worker", "device", "mode"])
            done = GaugeMetricFamily("portrait_worker_jobs_done", "Jobs run by the worker since it started",
                                     labels=["worker", "device", "mode"])
            for w in st["workers"]:
                labels = [w["id"], w["device"], w["mode"]]
                hb.add_metric(labels, max(0.0, t - (w["heartbeat_at"] or 0)))
                busy.add_metric(labels, 1 if w["job_id"] else 0)
                done.add_metric(labels, w["jobs_done"])
            yield hb
            yield busy
            yield done

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector())
    return generate_latest(reg)
