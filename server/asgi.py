"""The ASGI application `portrait serve` runs under uvicorn: the Flask app (server/app.py) on a pool of
request threads, and the progress streams (`GET /api/v1/jobs/{id}/events`) as coroutines on the loop.

A stream request goes through Flask first, marked in its ASGI scope: the route authenticates, answers
404 / 429 / 503 as for any request, and, when all is well, answers a small JSON (the job's first state,
its tenant and the base URL) with the `X-Portrait-Stream-Open` header instead of streaming. This module
then sends the event stream itself from `server.async_streams`' feed. Any other answer goes out as is.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from typing import Optional

from a2wsgi import WSGIMiddleware

from .async_streams import AsyncStreamFeed
from .errors import NotFound
from .present import with_label
from .streams import ASYNC_STREAM, SSE_HEADERS, SSE_KEEPALIVE, SSE_RETRY_MS, STREAM_OPEN, sse_event

EVENTS_PATH = re.compile(r"^/api/v1/jobs/([^/]+)/events$")
THREADS_ENV = "PORTRAIT_SERVE_THREADS"  # request threads per process, set by `portrait serve --threads`


class PortraitASGI:
    def __init__(self, flask_app, threads: int = 8):
        self.flask = flask_app
        self.wsgi = WSGIMiddleware(flask_app, workers=threads)
        service, front = flask_app.extensions["portrait"], flask_app.extensions["portrait.front"]
        self.max_seconds = front.sse_max_seconds
        self.feed = AsyncStreamFeed(service.db, self._fetch, poll_seconds=front.sse_poll_seconds,
                                    max_streams=front.sse_max_async_streams, news=service.db.news)
        flask_app.extensions["portrait.async_streams"] = self.feed

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] == "http" and scope["method"] == "GET" and EVENTS_PATH.match(scope["path"]):
            return await self._events(scope, receive, send)
        return await self.wsgi(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _fetch(self, job_id: str, tenant_id: str, base: str) -> Optional[dict]:
        """A job's JSON as its stream shows it (signed result URLs on the stream's host); on the feed's thread."""
        with self.flask.test_request_context("/", base_url=base):
            try:
                return with_label(self.flask.extensions["portrait"].get_job(tenant_id, job_id))
            except NotFound:
                return None

    async def _events(self, scope, receive, send) -> None:
        answer: list[dict] = []

        async def keep(message):
            answer.append(message)

        await self.wsgi(dict(scope, **{ASYNC_STREAM: True}), receive, keep)
        start = answer[0] if answer else {}
        headers = {k.decode("latin-1").lower(): v for k, v in start.get("headers", [])}
        if start.get("status") != 200 or STREAM_OPEN.lower() not in headers:
            for message in answer:  # an error (401, 404, 429, 503) or anything else: as Flask answered
                await send(message)
            return
        opened = json.loads(b"".join(m.get("body", b"") for m in answer[1:]))
        job_id = EVENTS_PATH.match(scope["path"]).group(1)
        watch = self.feed.watch((job_id, opened["tenant"], opened["base"]), opened["job"])
        try:
            pump = asyncio.ensure_future(self._pump(send, watch, job_id))
            gone = asyncio.ensure_future(_disconnected(receive))
            done, pending = await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                task.result()
        finally:
            self.feed.unwatch(watch)

    async def _pump(self, send, watch, job_id: str) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            *((k.lower().encode(), v.encode()) for k, v in SSE_HEADERS.items())]})

        async def out(text: str) -> None:
            await send({"type": "http.response.body", "body": text.encode(), "more_body": True})

        # As the thread route: the reconnect hint, the current state at once, then each change.
        await out(f"retry: {SSE_RETRY_MS}\n\n")
        start, seen, last = time.monotonic(), watch.version, None
        job = watch.job
        while True:
            text, event_id, ended = sse_event(job, job_id)
            if event_id != last:
                await out(text)
                last = event_id
            if ended or time.monotonic() - start > self.max_seconds:
                break
            if await watch.wait(seen, SSE_KEEPALIVE):
                seen, job = watch.version, watch.job
            else:
                await out(": keep-alive\n\n")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def create_asgi():
    """uvicorn's factory (`server.asgi:create_asgi`), in each server process: the app from PORTRAIT_* settings."""
    from .app import create_app

    return PortraitASGI(create_app(), threads=int(os.environ.get(THREADS_ENV, "8")))
