"""Job progress for event streams: one poller per server process watches every job that has a stream open
and wakes those streams when their job changes, so 100 watchers of one job cost the database one cheap
query per poll (not 100), and a stream's thread sleeps on a condition instead of polling.

Each open stream still holds a request thread (waitress and gunicorn's gthread serve one request per
thread), so a process accepts at most `max_streams` at once and answers 503 `too_many_streams` with
`Retry-After` beyond that: the streams can never take the threads that /healthz, the form and the API's
polls need. Clients that get it poll `GET /api/v1/jobs/{id}` instead (docs/api.md).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Callable, Optional

from sqlalchemy import func, select

from .db.models import TERMINAL_STATES, Job
from .errors import ServiceError


class TooManyStreams(ServiceError):
    code, status = "too_many_streams", 503


def check_room(busy: int, limit: int, job_id: str) -> None:
    """TooManyStreams when a process already has `busy` streams open of its `limit` (both stream servers)."""
    if busy >= limit:
        raise TooManyStreams(f"this server process has {busy} event streams open, its limit; poll "
                             f"GET /api/v1/jobs/{job_id} instead, or retry the stream later",
                             details={"open": busy, "limit": limit, "retry_after": 5})


SSE_KEEPALIVE = 15.0  # seconds without news before a comment line keeps an event stream alive
SSE_RETRY_MS = 3000  # the `retry:` hint: a dropped stream's client reconnects after this
ASYNC_STREAM = "portrait.async_stream"  # the ASGI scope key server/asgi.py sets on a stream it will serve
STREAM_OPEN = "X-Portrait-Stream-Open"  # the route's answer to it: checks passed, stream it
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def snapshot_id(data: str) -> str:
    """The SSE event id of a job state (its JSON text): equal states, equal ids (a reconnect's Last-Event-ID)."""
    return hashlib.sha1(data.encode()).hexdigest()[:16]


def sse_event(job: Optional[dict], job_id: str) -> tuple[str, str, bool]:
    """(the event's text, its id, whether the stream ends with it) for the job's state; None: deleted."""
    if job is None:
        return f"event: end\ndata: {json.dumps({'id': job_id, 'state': 'deleted'})}\n\n", "deleted", True
    data = json.dumps(job, sort_keys=True)
    ended = job["state"] in TERMINAL_STATES
    event_id = snapshot_id(data)
    return f"event: {'end' if ended else 'progress'}\nid: {event_id}\ndata: {data}\n\n", event_id, ended


class StreamHub:
    """Per server process, over the service's database."""

    def __init__(self, db, *, poll_seconds: float = 0.5, max_streams: int = 4):
        self.db = db
        self.poll_seconds, self.max_streams = poll_seconds, max_streams
        self._lock = threading.Condition()
        self._watchers: dict[str, int] = {}  # job -> its open streams
        self._marks: dict[str, tuple] = {}  # job -> what the poller saw last (state, stage, progress, ...)
        self._versions: dict[str, int] = {}  # job -> bumped on every change the poller sees
        self._thread: Optional[threading.Thread] = None
        self.polls = 0  # database rounds so far (the bench and the tests read it)

    def open(self, job_id: str) -> Callable[[], None]:
        """Take one stream slot for a stream of `job_id` (TooManyStreams when none is free); returns the
        function that gives it back (call it once, when the response closes)."""
        with self._lock:
            check_room(sum(self._watchers.values()), self.max_streams, job_id)
            self._watchers[job_id] = self._watchers.get(job_id, 0) + 1
            self._versions.setdefault(job_id, 0)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._poll_forever, name="portrait-streams", daemon=True)
                self._thread.start()
        return lambda: self._close(job_id)

    def _close(self, job_id: str) -> None:
        with self._lock:
            self._watchers[job_id] -= 1
            if not self._watchers[job_id]:
                del self._watchers[job_id]
                self._marks.pop(job_id, None)
                self._versions.pop(job_id, None)

    def version(self, job_id: str) -> int:
        with self._lock:
            return self._versions.get(job_id, 0)

    def wait(self, job_id: str, seen: int, timeout: float) -> int:
        """Block until the job's version passes `seen` or `timeout` passes; the version now."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._versions.get(job_id, 0) == seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            return self._versions.get(job_id, 0)

    def _poll_forever(self) -> None:
        while True:
            with self._lock:
                jobs = sorted(self._watchers)
                if not jobs:
                    self._thread = None
                    return
            try:
                self._poll(jobs)
            except Exception:  # a database hiccup: the streams keep their last state, the next round retries
                pass
            time.sleep(self.poll_seconds)

    def _poll(self, jobs: list[str]) -> None:
        """One round over the database; a changed job's streams wake."""
        self.polls += 1
        marks = poll_marks(self.db, jobs)
        with self._lock:
            changed = False
            for j in jobs:
                if self._marks.get(j) != marks[j]:
                    self._marks[j] = marks[j]
                    self._versions[j] = self._versions.get(j, 0) + 1
                    changed = True
            if changed:
                self._lock.notify_all()


def poll_marks(db, jobs: list[str]) -> dict[str, tuple]:
    """What a stream shows of each job, as a comparable mark: its changing columns, plus the queue's shape
    for a queued job (its position moves when any queued job starts). Two queries for any number of jobs."""
    with db.engine.connect() as c:
        rows = {r.id: tuple(r)[1:] for r in c.execute(
            select(Job.id, Job.state, Job.stage, Job.progress, Job.attempts, Job.cancel_requested,
                   Job.finished_at).where(Job.id.in_(jobs)))}
        queue = tuple(c.execute(select(func.count(), func.max(Job.started_at)).select_from(Job)
                                .where(Job.state.in_(("queued", "running")))).one())
    return {j: rows.get(j, ("deleted",)) + (queue if rows.get(j, ("",))[0] == "queued" else ()) for j in jobs}
