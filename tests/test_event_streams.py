"""Job event streams over a real socket: one poller per process feeds every stream (fan-out), a process
holds at most `sse_max_streams` (503 `too_many_streams` with Retry-After beyond, so the streams never take
the threads /healthz needs), a change reaches every open stream within a second, and a reconnecting
client gets the reconnect hint and the current state at once."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

from helpers_service import auth, live_server, make_app, new_key, queued_job


def _open(port: int, path: str, key: str, **headers) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", path, headers={"Authorization": f"Bearer {key}", **headers})
    return c, c.getresponse()


def _next_event(resp) -> dict:
    """The next SSE block with data (comments and the retry hint skipped)."""
    fields: dict = {}
    while True:
        line = resp.readline().decode().rstrip("\n")
        if line == "":
            if "data" in fields:
                return fields
            fields = {}
            continue
        if not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


@pytest.mark.slow
def test_streams_share_one_poller_are_capped_and_all_see_a_change_at_once(tmp_path):
    app = make_app(tmp_path / "data", sse_max_streams=3, sse_poll_seconds=0.05)
    key = new_key(app, "app")
    c = app.test_client()
    job = {"id": queued_job(app, key)}
    path = f"/api/v1/jobs/{job['id']}/events"
    with live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        opened = [_open(port, path, key) for _ in range(3)]
        firsts = [_next_event(r) for _, r in opened]  # the current state at once, on every stream
        assert {f["event"] for f in firsts} == {"progress"} and len({f["id"] for f in firsts}) == 1

        conn, busy = _open(port, path, key)  # a fourth: this process's streams are all in use
        assert busy.status == 503  # before reading: a stream that was let in would never end
        body = json.loads(busy.read())
        assert body["error"]["code"] == "too_many_streams"
        assert int(busy.getheader("Retry-After")) >= 5  # ours (5 s), or the rate window's reset if later
        conn.close()
        hc = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        tic = time.perf_counter()
        hc.request("GET", "/healthz")
        assert hc.getresponse().status == 200 and time.perf_counter() - tic < 2.0  # the server answers

        hub = app.extensions["portrait.streams"]
        polls, tic = hub.polls, time.monotonic()
        time.sleep(1.0)
        rounds = hub.polls - polls  # one poller for the three streams: ~20 rounds in 1 s at 0.05 s, not 60
        assert 0 < rounds <= 1.0 / 0.05 + 5, rounds

        got: dict[int, float] = {}

        def follow(i, resp):
            if _next_event(resp)["event"] == "end":
                got[i] = time.monotonic()

        readers = [threading.Thread(target=follow, args=(i, r)) for i, (_, r) in enumerate(opened)]
        for t in readers:
            t.start()
        changed = time.monotonic()
        assert c.post(f"/api/v1/jobs/{job['id']}/cancel", headers=auth(key)).status_code == 202
        for t in readers:
            t.join(10)
        assert sorted(got) == [0, 1, 2] and max(got.values()) - changed < 1.0, got
        for conn, _ in opened:
            conn.close()

        # Slots come back when streams close (a gone client is noticed at its stream's next keep-alive,
        # within SSE_KEEPALIVE); a reconnect (Last-Event-ID) gets the hint and the current state at once.
        deadline = time.monotonic() + 60
        while True:
            conn, resp = _open(port, path, key, **{"Last-Event-ID": firsts[0]["id"]})
            if resp.status == 200:
                break
            assert resp.status == 503 and time.monotonic() < deadline, resp.status
            resp.read()
            conn.close()
            time.sleep(0.5)
        hint = resp.readline().decode().strip()
        state = _next_event(resp)
        assert hint == "retry: 3000" and state["event"] == "end" and json.loads(state["data"])["state"] == "cancelled"
        conn.close()
