"""Progress streams as `portrait serve` serves them (server/asgi.py under uvicorn, over a real socket):
hundreds of open streams hold no request thread, so /healthz and the API still answer while they are open
on a server with 2 request threads; one feed polls for all of them; a change reaches every stream; errors
(401, 404, the cap) come back as JSON before any stream starts; a closed client gives its slot back."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from contextlib import contextmanager

import pytest

from helpers_service import auth, live_asgi, make_app, new_key, queued_job

STREAMS = 300


@contextmanager
def _served(tmp_path, **config):
    """(app, key, a queued job's events path, port, the PortraitASGI): the app under uvicorn, 2 threads."""
    app = make_app(tmp_path / "data", **config)
    key = new_key(app, "app")
    job = queued_job(app, key)
    with live_asgi(app, threads=2) as (url, asgi):
        yield app, key, job, f"/api/v1/jobs/{job}/events", int(url.rsplit(":", 1)[1]), asgi


async def _stream(port: int, path: str, key: str, **headers) -> tuple:
    """Open one stream; returns (reader, writer, status line, the first data event's fields)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n{extra}\r\n".encode())
    await writer.drain()
    status = (await reader.readline()).decode().strip()
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    return reader, writer, status, await _event(reader)


async def _event(reader) -> dict:
    """The next SSE block with data (comments and the retry hint skipped; chunk-size lines skipped)."""
    fields: dict = {}
    while True:
        raw = await reader.readline()
        if not raw:
            return fields
        line = raw.decode().rstrip("\r\n")
        if line == "":
            if "data" in fields:
                return fields
            fields = {k: v for k, v in fields.items() if k == "retry"}  # the hint stays with the next event
            continue
        name, sep, value = line.partition(": ")
        if sep and not line.startswith(":"):
            fields[name] = value


def _get(port: int, path: str, key: str | None = None, timeout: float = 5) -> tuple[int, dict, float]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    tic = time.perf_counter()
    c.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
    r = c.getresponse()
    body = r.read()
    took = time.perf_counter() - tic
    c.close()
    return r.status, (json.loads(body) if r.getheader("Content-Type", "").startswith("application/json") else {}), took


@pytest.mark.slow
def test_hundreds_of_streams_hold_no_thread_and_all_see_the_change(tmp_path):
    with _served(tmp_path, sse_poll_seconds=0.1) as (app, key, job, path, port, asgi):

        async def scenario():
            opened = await asyncio.wait_for(asyncio.gather(*(_stream(port, path, key) for _ in range(STREAMS))), 30)
            assert {o[2] for o in opened} == {"HTTP/1.1 200 OK"}
            firsts = [o[3] for o in opened]  # the current state at once, on every stream
            assert {f["event"] for f in firsts} == {"progress"} and len({f["id"] for f in firsts}) == 1
            assert json.loads(firsts[0]["data"])["state"] == "queued"
            assert asgi.feed.open_streams == STREAMS

            # 300 streams open, 2 request threads: the rest of the API still answers.
            for probe, who in (("/healthz", None), (f"/api/v1/jobs/{job}", key), ("/", None)):
                status, _, took = await asyncio.to_thread(_get, port, probe, who)
                assert status == 200 and took < 2.0, (probe, status, took)

            polls = asgi.feed.polls
            await asyncio.sleep(1.0)  # one feed for 300 streams: ~10 rounds a second at 0.1 s, not 3000
            assert 0 < asgi.feed.polls - polls <= 15

            changed = time.monotonic()
            assert app.test_client().post(f"/api/v1/jobs/{job}/cancel", headers=auth(key)).status_code == 202
            ends = await asyncio.wait_for(asyncio.gather(*(_event(o[0]) for o in opened)), 10)
            took = time.monotonic() - changed
            assert {e["event"] for e in ends} == {"end"}
            assert {json.loads(e["data"])["state"] for e in ends} == {"cancelled"}
            assert took < 5.0, took
            for o in opened:
                o[1].close()

            # Every slot comes back once the clients are gone.
            deadline = time.monotonic() + 10
            while asgi.feed.open_streams:
                assert time.monotonic() < deadline, asgi.feed.open_streams
                await asyncio.sleep(0.05)

            # A reconnect (Last-Event-ID) gets the hint and the current state at once.
            reader, writer, status, state = await _stream(port, path, key, **{"Last-Event-ID": firsts[0]["id"]})
            assert status == "HTTP/1.1 200 OK" and state["event"] == "end"
            assert json.loads(state["data"])["state"] == "cancelled"
            writer.close()

        asyncio.run(scenario())


def test_stream_errors_are_json_before_the_stream_and_the_cap_holds(tmp_path):
    with _served(tmp_path, sse_max_async_streams=2, sse_poll_seconds=0.05) as (app, key, job, path, port, asgi):
        other = new_key(app, "other")
        status, body, _ = _get(port, path)
        assert status == 401 and body["error"]["code"] == "missing_key"
        status, body, _ = _get(port, path, other)  # another tenant's job does not exist for it
        assert status == 404 and body["error"]["code"] == "job_not_found"
        status, body, _ = _get(port, "/api/v1/jobs/nope/events", key)
        assert status == 404 and body["error"]["code"] == "job_not_found"

        async def scenario():
            opened = [await _stream(port, path, key) for _ in range(2)]
            assert [o[2] for o in opened] == ["HTTP/1.1 200 OK"] * 2
            assert opened[0][3]["retry"] == "3000"  # the reconnect hint comes first
            status, body, _ = await asyncio.to_thread(_get, port, path, key)
            assert status == 503 and body["error"]["code"] == "too_many_streams"
            assert body["error"]["details"]["limit"] == 2
            opened[0][1].close()
            deadline = time.monotonic() + 10
            while asgi.feed.open_streams > 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            reader, writer, status, _ = await _stream(port, path, key)
            assert status == "HTTP/1.1 200 OK"  # the slot came back

            # Deleting the job's identity ends its streams with `deleted`.
            iid = app.test_client().get(f"/api/v1/jobs/{job}", headers=auth(key)).get_json()["identity_id"]
            assert app.test_client().delete(f"/api/v1/identities/{iid}", headers=auth(key)).status_code in (200, 202, 204)
            for r in (opened[1][0], reader):
                end = await asyncio.wait_for(_event(r), 10)
                assert end["event"] == "end" and json.loads(end["data"])["state"] == "deleted"
            writer.close()
            opened[1][1].close()

        asyncio.run(scenario())


def test_deleting_an_identity_shows_its_queued_job_only_as_deleted(tmp_path):
    """What a stream feed can see while an identity is deleted, step by step: each time the service
    announces a change (what wakes the fleet's streams), its queued job is already gone, never
    `cancelled` for a moment first (a stream polling then would end with the wrong state)."""
    from sqlalchemy import select

    from server.db.models import Job

    app = make_app(tmp_path / "data")
    key = new_key(app, "app")
    job = queued_job(app, key)
    service = app.extensions["portrait"]
    seen: list[dict] = []

    class Watcher:  # stands where the broker's news goes, and reads the database as a feed would then
        def announce(self, ids):
            with service.db.session() as s:
                seen.append({j: s.scalar(select(Job.state).where(Job.id == j)) for j in ids})

    service.db.news = Watcher()
    c = app.test_client()
    iid = c.get(f"/api/v1/jobs/{job}", headers=auth(key)).get_json()["identity_id"]
    assert c.delete(f"/api/v1/identities/{iid}", headers=auth(key)).status_code in (200, 202, 204)
    assert seen == [{job: None}]  # one announcement, after the rows are gone
    assert c.get(f"/api/v1/jobs/{job}", headers=auth(key)).status_code == 404


@pytest.mark.slow
def test_in_a_fleet_the_brokers_news_wakes_the_streams_without_polling(tmp_path):
    """With a Redis broker, a change reaches an open stream through pub/sub (server/job_news.py) at once,
    although the stream feed would poll the database only every 30 s here."""
    from helpers_fleet import redis_server

    with redis_server(tmp_path) as url:
        with _served(tmp_path, broker_url=url, sse_poll_seconds=30) as (app, key, job, path, port, asgi):

            async def scenario():
                reader, writer, status, first = await _stream(port, path, key)
                assert status == "HTTP/1.1 200 OK" and json.loads(first["data"])["state"] == "queued"
                deadline = time.monotonic() + 10  # the feed's listener subscribes
                while not (asgi.feed._listener and asgi.feed._listener.connected.is_set()):
                    assert time.monotonic() < deadline, "the feed never subscribed"
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.2)
                polls = asgi.feed.polls
                changed = time.monotonic()
                assert app.test_client().post(f"/api/v1/jobs/{job}/cancel", headers=auth(key)).status_code == 202
                end = await asyncio.wait_for(_event(reader), 10)
                took = time.monotonic() - changed
                assert end["event"] == "end" and json.loads(end["data"])["state"] == "cancelled"
                assert took < 3.0, took  # not the 30 s poll
                assert asgi.feed.polls - polls <= 2  # woken by the news, not by a polling loop
                writer.close()

            asyncio.run(scenario())
