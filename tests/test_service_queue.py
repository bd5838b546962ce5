"""The embedded job queue (the jobs table on leases) with real `portrait worker` processes on SQLite:
crash recovery, restarts, cancel, priorities, per-tenant limits, a full queue, terminal states."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path

import pytest

from helpers_fleet import pid_of, runs, start_worker, stop, wait_for
from server.errors import QueueFull, error_response
from server.queue import lease
from server.service import Service
from server.settings import Settings
from server.worker import Worker

# A dead worker's job is retried once its lease runs out. A live worker heartbeats every lease / 4, so a
# 12 s lease survives a 9 s stall of a live worker (a loaded 2-core machine, a slow SQLite write) without a
# second worker taking its job: the "ran exactly once" asserts hold however slow the machine is.
LEASE = 12.0


def make_service(tmp_path: Path, **cfg) -> Service:
    return Service(Settings.load({"data_dir": tmp_path / "data", **cfg}, env={}))


def job_row(svc: Service, tenant: str, job_id: str) -> dict:
    return svc.get_job(tenant, job_id)


def log_events(logs: list[Path], job_id: str) -> list[dict]:
    out = []
    for p in logs:
        for line in p.read_text().splitlines():
            if line.startswith("{"):
                rec = json.loads(line)
                if rec.get("job") == job_id:
                    out.append(rec)
    return out


@pytest.mark.slow
def test_sigkill_mid_job_is_retried_and_succeeds_once(tmp_path):
    svc = make_service(tmp_path, lease_seconds=LEASE)
    tenant, _ = svc.create_tenant("studio")
    tid = tenant["id"]
    job = svc.submit_job(tid, "_sleep", options={"seconds": 4, "steps": 40}, internal=True)
    other = svc.submit_job(tid, "_sleep", options={"seconds": 0.5, "steps": 5}, internal=True)
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    env = {"lease_seconds": LEASE}
    workers = [start_worker(svc.settings.data_dir, logs[0], **env), start_worker(svc.settings.data_dir, logs[1], **env)]
    try:
        running = wait_for(lambda: (r := job_row(svc, tid, job["id"]))["state"] == "running"
                           and r["progress"] > 0.1 and r, 60, "the job to run")
        victim = pid_of(running["worker"])
        assert victim in {w.pid for w in workers}
        [w for w in workers if w.pid == victim][0].send_signal(signal.SIGKILL)
        done = wait_for(lambda: (r := job_row(svc, tid, job["id"]))["state"] in ("succeeded", "failed", "cancelled")
                        and r, 240, "the job to end")
        assert done["state"] == "succeeded", done
        assert done["attempts"] == 2
        assert pid_of(done["worker"]) != victim
        assert wait_for(lambda: job_row(svc, tid, other["id"])["state"] == "succeeded", 60, "the other job")
    finally:
        stop(workers)
    events = log_events(logs, job["id"])
    assert sorted(e["attempt"] for e in events if e["msg"] == "job started") == [1, 2]  # two logs, any order
    assert [e.get("state") for e in events if e["msg"] == "job ended"] == ["succeeded"]
    assert runs(svc.storage.job_dir(tid, job["id"])) == (1, 1)  # the retry started from a clean folder
    assert runs(svc.storage.job_dir(tid, other["id"])) == (1, 1)


@pytest.mark.slow
def test_restart_with_queued_and_orphaned_jobs_loses_nothing_runs_nothing_twice(tmp_path):
    svc = make_service(tmp_path, lease_seconds=LEASE)
    tenant, _ = svc.create_tenant("acme")
    tid = tenant["id"]
    jobs = [svc.submit_job(tid, "_sleep", options={"seconds": 0.2, "steps": 2}, internal=True) for _ in range(6)]
    # A worker dies holding a job: a running row with a lease nobody renews.
    orphan = lease.claim_next(svc.db, "deadhost:1:abc", lease_seconds=1.0, tenant_concurrency=10)
    assert orphan is not None and orphan.id == jobs[0]["id"]
    svc.close()
    del svc
    # "Restart": a new process state (new Service, new worker processes) on the same data dir.
    svc2 = make_service(tmp_path, lease_seconds=LEASE)
    listed = svc2.list_jobs(tid, limit=50)["items"]
    assert {j["id"] for j in listed} == {j["id"] for j in jobs}
    assert job_row(svc2, tid, jobs[0]["id"])["state"] == "running"  # not cancelled by the restart
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [start_worker(svc2.settings.data_dir, p, lease_seconds=LEASE) for p in logs]
    try:
        wait_for(lambda: all(job_row(svc2, tid, j["id"])["state"] == "succeeded" for j in jobs), 90,
                 "every job to succeed")
    finally:
        stop(workers)
    for j in jobs:
        assert runs(svc2.storage.job_dir(tid, j["id"])) == (1, 1)
        ended = [e for e in log_events(logs, j["id"]) if e["msg"] == "job ended"]
        assert len(ended) == 1
    assert job_row(svc2, tid, jobs[0]["id"])["attempts"] == 2


@pytest.mark.slow
def test_cancel_queued_and_running_touches_no_other_job(tmp_path):
    svc = make_service(tmp_path, lease_seconds=5, tenant_concurrency=1)
    tenant, _ = svc.create_tenant("acme")
    tid = tenant["id"]
    running = svc.submit_job(tid, "_sleep", options={"seconds": 30, "steps": 300}, internal=True)
    queued = svc.submit_job(tid, "_sleep", options={"seconds": 0.2}, internal=True)
    after = svc.submit_job(tid, "_sleep", options={"seconds": 0.2}, internal=True)
    w = start_worker(svc.settings.data_dir, tmp_path / "w.log", lease_seconds=5, tenant_concurrency=1)
    try:
        wait_for(lambda: job_row(svc, tid, running["id"])["progress"] > 0.01, 60, "the long job to run")
        assert svc.cancel_job(tid, queued["id"])["state"] == "cancelled"  # at once
        assert job_row(svc, tid, running["id"])["state"] == "running"  # the running job is untouched
        r = svc.cancel_job(tid, running["id"])
        assert r["cancel_requested"] and r["state"] in ("running", "cancelled")
        wait_for(lambda: job_row(svc, tid, running["id"])["state"] == "cancelled", 30, "the running job to stop")
        wait_for(lambda: job_row(svc, tid, after["id"])["state"] == "succeeded", 30, "the next job")
    finally:
        stop([w])
    assert runs(svc.storage.job_dir(tid, running["id"])) == (1, 0)  # stopped in the middle
    assert runs(svc.storage.job_dir(tid, queued["id"])) == (0, 0)  # never started
    assert runs(svc.storage.job_dir(tid, after["id"])) == (1, 1)
    assert job_row(svc, tid, running["id"])["error"]["code"] == "cancelled"
    # Terminal states never change: cancelling a finished job leaves it as it was.
    assert svc.cancel_job(tid, after["id"])["state"] == "succeeded"


def test_claim_order_priorities_and_tenant_concurrency(tmp_path):
    svc = make_service(tmp_path)
    a, _ = svc.create_tenant("a", concurrency=1)
    b, _ = svc.create_tenant("b")
    a1 = svc.submit_job(a["id"], "_empty", internal=True)
    a2 = svc.submit_job(a["id"], "_empty", internal=True)
    b_low = svc.submit_job(b["id"], "_empty", internal=True, priority=-5)
    b_high = svc.submit_job(b["id"], "_empty", internal=True, priority=5)
    assert svc.get_job(b["id"], b_high["id"])["queue_position"] == 0
    assert svc.get_job(b["id"], b_low["id"])["queue_position"] == 3
    claim = lambda w: lease.claim_next(svc.db, w, lease_seconds=30, tenant_concurrency=2)  # noqa: E731
    order = [claim(f"w{i}") for i in range(4)]
    # b's urgent job first, then a's oldest; a2 waits (a runs one at a time), b's batch job goes ahead.
    assert [c.id if c else None for c in order] == [b_high["id"], a1["id"], b_low["id"], None]
    assert lease.finish(svc.db, a1["id"], "w1", "succeeded")
    assert claim("w5").id == a2["id"]


def test_full_queue_is_a_429_and_changes_nothing(tmp_path):
    svc = make_service(tmp_path, max_queue_size=2)
    t, _ = svc.create_tenant("acme")
    svc.submit_job(t["id"], "_empty", internal=True)
    svc.submit_job(t["id"], "_empty", internal=True)
    with pytest.raises(QueueFull) as err:
        svc.submit_job(t["id"], "_empty", internal=True)
    status, body = error_response(err.value)
    assert status == 429 and body["error"]["code"] == "queue_full"
    assert len(svc.list_jobs(t["id"])["items"]) == 2


def test_terminal_states_never_change_and_dead_leases_give_up_after_max_attempts(tmp_path):
    svc = make_service(tmp_path, max_attempts=2)
    t, _ = svc.create_tenant("acme")
    j = svc.submit_job(t["id"], "_empty", internal=True)
    for attempt in (1, 2):
        c = lease.claim_next(svc.db, f"dead{attempt}", lease_seconds=0.01, tenant_concurrency=5)
        assert c.id == j["id"] and c.attempts == attempt
        time.sleep(0.05)
        requeued, ended = lease.reap(svc.db)
        assert (requeued, ended) == (([j["id"]], []) if attempt == 1 else ([], [j["id"]]))
    row = svc.get_job(t["id"], j["id"])
    assert row["state"] == "failed" and row["error"]["code"] == "worker_lost"
    # A late worker that thought it held the job cannot overwrite the ending.
    assert not lease.finish(svc.db, j["id"], "dead2", "succeeded")
    assert lease.heartbeat(svc.db, j["id"], "dead2", lease_seconds=5) == lease.HEARTBEAT_LOST
    assert lease.claim_job(svc.db, j["id"], "other", lease_seconds=5) is None
    assert svc.cancel_job(t["id"], j["id"])["state"] == "failed"


def test_idempotent_submit_and_random_ids(tmp_path):
    svc = make_service(tmp_path)
    t, _ = svc.create_tenant("acme")
    first = svc.submit_job(t["id"], "_empty", internal=True, idempotency_key="retry-1")
    again = svc.submit_job(t["id"], "_empty", internal=True, idempotency_key="retry-1")
    assert first["id"] == again["id"] and len(svc.list_jobs(t["id"])["items"]) == 1
    ids = [svc.submit_job(t["id"], "_empty", internal=True)["id"] for _ in range(5)]
    assert len(set(ids)) == 5 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # random ids (never a counter or a clock, which collided after restarts elsewhere): version-4 UUIDs
    assert all(uuid.UUID(hex=i).version == 4 for i in ids), ids


def test_internal_kinds_are_refused_from_the_public_path(tmp_path):
    from server.errors import BadRequest

    svc = make_service(tmp_path)
    t, _ = svc.create_tenant("acme")
    with pytest.raises(BadRequest) as err:
        svc.submit_job(t["id"], "_empty")
    assert err.value.code == "bad_kind"


def test_list_jobs_cursor_pagination(tmp_path):
    svc = make_service(tmp_path)
    t, _ = svc.create_tenant("acme")
    other, _ = svc.create_tenant("other")
    ids = {svc.submit_job(t["id"], "_empty", internal=True)["id"] for _ in range(7)}
    svc.submit_job(other["id"], "_empty", internal=True)
    seen, cursor = [], None
    while True:
        page = svc.list_jobs(t["id"], cursor=cursor, limit=3)
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 7 and set(seen) == ids


@pytest.mark.slow
def test_two_workers_drain_jobs_submitted_while_they_run(tmp_path):
    """Submissions (read-then-write transactions) never hit 'database is locked' while two worker
    processes claim and finish jobs on the same SQLite file; no job is claimed twice."""
    svc = make_service(tmp_path, max_queue_size=1000, tenant_concurrency=4)
    t, _ = svc.create_tenant("busy")
    workers = [start_worker(svc.settings.data_dir, tmp_path / f"w{i}.log", "--idle-exit", "10",
                            tenant_concurrency=4) for i in range(2)]
    try:
        wait_for(lambda: len(svc.stats()["workers"]) == 2, 120, "both workers")
        first = [svc.submit_job(t["id"], "_empty", internal=True)["id"] for _ in range(20)]
        wait_for(lambda: svc.stats()["jobs"]["succeeded"] > 0, 60, "the first jobs")
        rest = [svc.submit_job(t["id"], "_empty", internal=True)["id"] for _ in range(130)]
        wait_for(lambda: svc.stats()["jobs"]["succeeded"] == 150, 120, "150 jobs")
        for w in workers:
            w.wait(60)
    finally:
        stop(workers)
    rows = [svc.get_job(t["id"], j) for j in first + rest]
    assert all(r["state"] == "succeeded" and r["attempts"] == 1 for r in rows)
    assert {pid_of(r["worker"]) for r in rows} == {w.pid for w in workers}


def test_batch_rows_run_behind_interactive_jobs_and_a_failing_row_stops_no_other(tmp_path):
    from server.errors import BadRequest

    svc = make_service(tmp_path)
    t, _ = svc.create_tenant("studio")
    tid = t["id"]
    with pytest.raises(BadRequest) as err:  # one bad row: a 400 naming it, nothing queued
        svc.submit_batch(tid, [{"kind": "_empty"}, {"kind": "_sleep", "options": {"nope": 1}}], internal=True)
    assert err.value.details["row"] == 1 and "row 1" in err.value.message
    assert svc.list_jobs(tid)["items"] == []
    rows = [{"kind": "_sleep", "options": {"seconds": 0.05, "steps": 1}},
            {"kind": "_sleep", "options": {"seconds": 0.05, "steps": 1, "fail": "this customer's photos"}},
            {"kind": "_sleep", "options": {"seconds": 0.05, "steps": 1}}]
    batch = svc.submit_batch(tid, rows, name="saturday", internal=True, idempotency_key="b1")
    assert svc.submit_batch(tid, rows, internal=True, idempotency_key="b1")["id"] == batch["id"]
    interactive = svc.submit_job(tid, "_empty", internal=True)
    assert svc.get_job(tid, interactive["id"])["queue_position"] == 0  # ahead of the batch's rows
    assert batch["counts"]["queued"] == 3 and not batch["done"]
    order = []
    while (c := lease.claim_next(svc.db, "w", lease_seconds=30, tenant_concurrency=10)) is not None:
        order.append(c.id)
        lease.finish(svc.db, c.id, "w", "succeeded")
    assert order[0] == interactive["id"]
    svc2 = make_service(tmp_path)
    t2 = svc2.submit_batch(tid, rows, internal=True)
    Worker(svc2.settings, service=svc2).run_forever(max_jobs=3)
    done = svc2.get_batch(tid, t2["id"])
    assert done["done"] and done["progress"] == 1.0
    assert done["counts"]["succeeded"] == 2 and done["counts"]["failed"] == 1
    assert [j["state"] for j in done["jobs"]] == ["succeeded", "failed", "succeeded"]
    assert done["jobs"][1]["error"]["message"] == "this customer's photos"


@pytest.mark.slow
def test_deleting_an_identity_while_its_job_runs_leaves_nothing_and_the_worker_goes_on(tmp_path):
    import io as _io

    import numpy as np
    from PIL import Image

    svc = make_service(tmp_path, lease_seconds=LEASE)
    t, _ = svc.create_tenant("acme")
    tid = t["id"]
    ident = svc.create_identity(tid, "leaving")
    buf = _io.BytesIO()
    Image.fromarray(np.full((300, 300, 3), 128, np.uint8)).save(buf, "PNG")
    svc.add_photo(tid, ident["id"], "me.png", buf.getvalue())
    doomed = svc.submit_job(tid, "_sleep", ident["id"], options={"seconds": 20, "steps": 200}, internal=True)
    after = svc.submit_job(tid, "_sleep", options={"seconds": 0.1, "steps": 1}, internal=True)
    w = start_worker(svc.settings.data_dir, tmp_path / "w.log", lease_seconds=LEASE)
    try:
        wait_for(lambda: job_row(svc, tid, doomed["id"])["progress"] > 0.02, 60, "the job to run")
        svc.delete_identity(tid, ident["id"])
        wait_for(lambda: job_row(svc, tid, after["id"])["state"] == "succeeded", 60, "the next job")
        assert w.poll() is None  # the worker is alive
    finally:
        stop([w])
    leftovers = [p for p in (tmp_path / "data").rglob("*") if ident["id"] in str(p) or doomed["id"] in str(p)]
    assert leftovers == []
