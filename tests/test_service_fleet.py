"""The fleet: Celery workers on a real redis-server, and the lease queue on a real PostgreSQL
(both started by the tests from Debian's packages)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from helpers_fleet import pid_of, postgres_server, redis_server, runs, start_worker, stop, wait_for
from helpers_service import newest_migration
from server.db import Database
from server.service import Service
from server.settings import Settings


def _events(logs: list[Path], job_id: str, msg: str) -> list[dict]:
    out = []
    for p in logs:
        for line in p.read_text().splitlines():
            if line.startswith("{"):
                rec = json.loads(line)
                if rec.get("job") == job_id and rec["msg"] == msg:
                    out.append(rec)
    return out


# Long enough that a live worker stalled for 9 s still renews (it heartbeats every lease / 4): a job runs
# exactly once on a loaded machine; a SIGKILLed worker's job is retried after it.
LEASE = 12.0


@pytest.mark.slow
def test_celery_workers_on_redis_share_the_queue_and_survive_sigkill(tmp_path):
    with redis_server(tmp_path / "redis") as url:
        cfg = {"broker_url": url, "lease_seconds": LEASE, "visibility_timeout": 3600}
        svc = Service(Settings.load({"data_dir": tmp_path / "data", **cfg}, env={}))
        assert svc.dispatcher.mode == "celery"
        t, _ = svc.create_tenant("fleet")
        tid = t["id"]
        logs = [tmp_path / "c1.log", tmp_path / "c2.log"]
        workers = [start_worker(svc.settings.data_dir, p, **cfg) for p in logs]
        try:
            long_job = svc.submit_job(tid, "_sleep", options={"seconds": 4, "steps": 40}, internal=True)
            running = wait_for(lambda: (r := svc.get_job(tid, long_job["id"]))["state"] == "running"
                               and r["progress"] > 0.1 and r, 90, "a Celery worker to run the job")
            victim = pid_of(running["worker"])
            assert victim in {w.pid for w in workers}
            [w for w in workers if w.pid == victim][0].send_signal(signal.SIGKILL)
            # The lease runs out, the surviving worker's reaper requeues and republishes the job.
            done = wait_for(lambda: (r := svc.get_job(tid, long_job["id"]))["state"]
                            in ("succeeded", "failed", "cancelled") and r, 240, "the job to end")
            assert done["state"] == "succeeded" and done["attempts"] == 2
            assert pid_of(done["worker"]) != victim
            # Both workers took jobs from the shared queue; duplicates of a delivery are dropped.
            more = [svc.submit_job(tid, "_sleep", options={"seconds": 0.2, "steps": 2}, internal=True)
                    for _ in range(4)]
            svc.dispatcher.publish([(more[0]["id"], 0), (more[0]["id"], 0)])  # a redelivered duplicate
            wait_for(lambda: all(svc.get_job(tid, j["id"])["state"] == "succeeded" for j in more), 90,
                     "the other jobs")
            dropped = "delivery dropped (job finished or held by a live lease)"
            wait_for(lambda: len(_events(logs, more[0]["id"], dropped)) >= 2, 60, "both duplicates delivered")
        finally:
            stop(workers)
        assert runs(svc.storage.job_dir(tid, long_job["id"])) == (1, 1)
        assert len(_events(logs, long_job["id"], "job ended")) == 1
        for j in more:
            assert runs(svc.storage.job_dir(tid, j["id"])) == (1, 1)
            assert len(_events(logs, j["id"], "job ended")) == 1
        assert len(_events(logs, more[0]["id"], dropped)) == 2  # the three deliveries ran the job once


@pytest.mark.slow
def test_celery_jobs_survive_a_broker_that_lost_its_messages(tmp_path):
    """The job row is the truth: Redis restarted empty (FLUSHALL) loses no queued job."""
    import redis

    with redis_server(tmp_path / "redis") as url:
        cfg = {"broker_url": url, "lease_seconds": LEASE, "redispatch_seconds": 2.0}
        svc = Service(Settings.load({"data_dir": tmp_path / "data", **cfg}, env={}))
        t, _ = svc.create_tenant("fleet")
        jobs = [svc.submit_job(t["id"], "_sleep", options={"seconds": 0.1, "steps": 1}, internal=True)["id"]
                for _ in range(3)]
        redis.Redis.from_url(url).flushall()  # every message gone, no worker ever saw them
        worker = start_worker(svc.settings.data_dir, tmp_path / "w.log", **cfg)
        try:
            wait_for(lambda: all(svc.get_job(t["id"], j)["state"] == "succeeded" for j in jobs), 90,
                     "the jobs to be published again and run")
        finally:
            stop([worker])
        for j in jobs:
            assert runs(svc.storage.job_dir(t["id"], j)) == (1, 1)


@pytest.mark.slow
def test_postgres_migrations_and_skip_locked_claims_over_200_jobs(tmp_path):
    with postgres_server(tmp_path / "pg") as url:
        db = Database(url)
        assert db.dialect == "postgresql"
        assert db.migrate() == newest_migration() == "0003"
        assert db.migrate() == newest_migration()  # idempotent
        cfg = {"database_url": url, "lease_seconds": 10, "tenant_concurrency": 4, "max_queue_size": 500}
        svc = Service(Settings.load({"data_dir": tmp_path / "data", **cfg}, env={}), db=db)
        # No Redis here: the progress streams' change feed is the database's LISTEN / NOTIFY.
        assert type(svc.db.news).__name__ == "PgJobNews"
        heard: list[str] = []
        listener = svc.db.news.listen(heard.extend)
        wait_for(listener.connected.is_set, 30, "the LISTEN connection")
        t, _ = svc.create_tenant("bulk")
        logs = [tmp_path / "p1.log", tmp_path / "p2.log"]
        workers = [start_worker(svc.settings.data_dir, p, "--idle-exit", "10", **cfg) for p in logs]
        try:
            wait_for(lambda: len(svc.stats()["workers"]) == 2, 120, "both workers")
            jobs = [svc.submit_job(t["id"], "_empty", internal=True)["id"] for _ in range(200)]
            wait_for(lambda: svc.stats()["jobs"]["succeeded"] == 200, 180, "200 empty jobs")
            for w in workers:
                w.wait(60)
        finally:
            stop(workers)
        rows = [svc.get_job(t["id"], j) for j in jobs]
        assert all(r["state"] == "succeeded" and r["attempts"] == 1 for r in rows)  # none claimed twice
        wait_for(lambda: set(jobs) <= set(heard), 30, "every job's change announced")  # by the worker processes
        listener.close()
        by_worker = {}
        for r in rows:
            by_worker[pid_of(r["worker"])] = by_worker.get(pid_of(r["worker"]), 0) + 1
        assert set(by_worker) == {w.pid for w in workers}, by_worker  # both workers claimed
        for j in jobs[:20]:
            assert len(_events(logs, j, "job started")) == 1
        svc.close()
