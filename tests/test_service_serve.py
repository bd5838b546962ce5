"""`portrait serve` (uvicorn, one process and then two, on a loopback socket) restarted with queued jobs: nothing
lost, nothing run twice; the ops endpoints answer through it."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_fleet import runs, start_worker, stop, wait_for
from server.service import Service
from server.settings import Settings


def serve(data_dir: Path, log: Path, *args: str) -> tuple[subprocess.Popen, int]:
    """`portrait serve --port 0`: the server binds a free port itself and names it; returns it (no race for
    a port closed before the server binds it)."""
    env = dict(os.environ, PORTRAIT_RATE_LIMIT="100000 per minute")
    fh = open(log, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "portrait", "serve", "--port", "0", "--data-dir",
                             str(data_dir), *args], env=env, stdout=fh, stderr=fh, start_new_session=True)

    def bound():
        assert proc.poll() is None, f"portrait serve exited: {log.read_text()[-2000:]}"
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text())
        return m and int(m.group(1))

    return proc, wait_for(bound, 120, "portrait serve to bind its port")


def get(port: int, path: str, key: str | None = None) -> tuple[int, bytes]:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
        r = c.getresponse()
        return r.status, r.read()
    except OSError:
        return 0, b""


@pytest.mark.slow
def test_server_restart_with_queued_jobs(tmp_path):
    data = tmp_path / "data"
    created = subprocess.run([sys.executable, "-m", "portrait", "tenant", "create", "acme", "--data-dir", str(data)],
                             capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().split()[-1]
    svc = Service(Settings.load({"data_dir": data}, env={}))
    tid = svc.authenticate(key).id
    jobs = [svc.submit_job(tid, "_sleep", options={"seconds": 0.1, "steps": 2}, internal=True)["id"]
            for _ in range(5)]

    def listed(port: int) -> dict:
        status, body = get(port, "/api/v1/jobs?limit=50", key)
        assert status == 200, body
        return {j["id"]: j["state"] for j in json.loads(body)["items"]}

    server, port = serve(data, tmp_path / "serve1.log", "--workers", "1")
    try:
        wait_for(lambda: get(port, "/healthz")[0] == 200, 120, "the server")
        assert listed(port) == {j: "queued" for j in jobs}
        status, body = get(port, "/readyz")
        assert status == 200 and json.loads(body)["checks"]["database"] == "ok"
        status, body = get(port, "/metrics")
        assert status == 200 and b'portrait_jobs{state="queued"} 5.0' in body
        assert get(port, "/api/v1/jobs")[0] == 401
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    server, port = serve(data, tmp_path / "serve2.log", "--workers", "2", "--threads", "4")  # two processes this time
    worker = None
    try:
        wait_for(lambda: get(port, "/healthz")[0] == 200, 120, "the restarted server")
        assert listed(port) == {j: "queued" for j in jobs}  # nothing lost
        stream = http.client.HTTPConnection("127.0.0.1", port, timeout=60)  # a progress stream, while queued
        stream.request("GET", f"/api/v1/jobs/{jobs[-1]}/events", headers={"Authorization": f"Bearer {key}"})
        events = stream.getresponse()
        assert events.status == 200 and events.getheader("Content-Type").startswith("text/event-stream")
        worker = start_worker(data, tmp_path / "worker.log")
        wait_for(lambda: set(listed(port).values()) == {"succeeded"}, 120, "the jobs to run")
        seen = []
        while not seen or seen[-1][0] != "end":
            block = {}
            for line in iter(lambda: events.readline().decode().rstrip("\n"), ""):
                name, _, value = line.partition(": ")
                block[name] = value
            if "data" in block:
                seen.append((block["event"], json.loads(block["data"])["state"]))
        assert seen[0] == ("progress", "queued") and seen[-1] == ("end", "succeeded"), seen
        stream.close()
        status, body = get(port, f"/api/v1/jobs/{jobs[0]}", key)
        assert status == 200 and json.loads(body)["progress"] == 1.0
    finally:
        stop([server] + ([worker] if worker else []))
    for j in jobs:  # nothing run twice
        assert runs(svc.storage.job_dir(tid, j)) == (1, 1)
        assert svc.get_job(tid, j)["attempts"] == 1
