"""Event streams as coroutines: under `portrait serve` (uvicorn), an open progress stream costs a socket
and a small task, not a request thread, so one process holds thousands of them while /healthz, the form
and the API's polls keep their threads.

One feed per server process fans one change feed out to every open stream:
- it polls the database for every watched job at once (`poll_marks`: two queries a round, whatever the
  number of streams or of the jobs they watch); in a fleet it polls at once when the broker's Redis
  announces a change (`server.job_news`), and otherwise only every NEWS_SAFETY_SECONDS;
- for a job that changed, it reads the job's JSON once per (tenant, base URL) and wakes all of its streams.
The routes' checks (authentication, 404, rate limit, the 503 cap) stay in Flask: see server/asgi.py.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

from .streams import check_room, poll_marks

NEWS_SAFETY_SECONDS = 5.0  # with the fleet's change feed connected, a poll at least this often anyway
Key = tuple[str, str, str]  # (job id, tenant id, base URL): streams that see the same JSON share one watch


@dataclass
class Watch:
    key: Key
    job: Optional[dict]  # the last state read (None: the job was deleted)
    streams: int = 0
    version: int = 0
    mark: Optional[tuple] = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def publish(self, job: Optional[dict]) -> None:
        self.job, self.version = job, self.version + 1
        self.changed.set()
        self.changed = asyncio.Event()  # the woken streams read `job`; later waiters wait for the next one

    async def wait(self, seen: int, timeout: float) -> bool:
        """True when a version after `seen` is out (at once if it already is), False after `timeout`."""
        if self.version != seen:
            return True
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False


class AsyncStreamFeed:
    """Per server process and event loop. `fetch(job_id, tenant_id, base_url)` gives a job's JSON dict
    (None when it is gone); it and the polls run on the feed's own thread, never on the loop."""

    def __init__(self, db, fetch: Callable[[str, str, str], Optional[dict]], *, poll_seconds: float = 0.5,
                 max_streams: int = 10000, news=None):
        self.db, self.fetch = db, fetch
        self.news = news  # server.job_news.JobNews or None
        self._listener = None
        self._kick: Optional[asyncio.Event] = None
        self.poll_seconds, self.max_streams = poll_seconds, max_streams
        self._watches: dict[Key, Watch] = {}
        self._open = 0  # read from request threads (check_room), written on the loop
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="portrait-feed")
        self._task: Optional[asyncio.Task] = None
        self.polls = 0

    @property
    def open_streams(self) -> int:
        return self._open

    def check_room(self, job_id: str) -> None:
        """TooManyStreams when this process already has `max_streams` open (called on a request thread)."""
        with self._lock:
            busy = self._open
        check_room(busy, self.max_streams, job_id)

    def watch(self, key: Key, first: dict) -> Watch:
        """A stream of `key` opens (on the loop); its first state is the route's `first`."""
        w = self._watches.get(key)
        if w is None:
            w = self._watches[key] = Watch(key, first)
        w.streams += 1
        with self._lock:
            self._open += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return w

    def unwatch(self, w: Watch) -> None:
        w.streams -= 1
        with self._lock:
            self._open -= 1
        if not w.streams:
            self._watches.pop(w.key, None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._kick = asyncio.Event()
        if self.news is not None and self._listener is None:
            kick = self._kick

            def heard(ids: list[str]) -> None:  # on the listener's thread
                if any(w.key[0] in ids for w in list(self._watches.values())):
                    loop.call_soon_threadsafe(kick.set)

            self._listener = self.news.listen(heard)
        try:
            while self._watches:
                try:
                    await self._round(loop)
                except Exception:  # a database hiccup: the streams keep their last state, the next round retries
                    pass
                live = self._listener is not None and self._listener.connected.is_set()
                try:
                    await asyncio.wait_for(self._kick.wait(), NEWS_SAFETY_SECONDS if live else self.poll_seconds)
                except asyncio.TimeoutError:
                    pass
                self._kick.clear()
        finally:
            if self._listener is not None:
                self._listener.close()
                self._listener = None

    async def _round(self, loop) -> None:
        watches = list(self._watches.values())
        jobs = sorted({w.key[0] for w in watches})
        self.polls += 1
        marks = await loop.run_in_executor(self._pool, poll_marks, self.db, jobs)
        changed = [w for w in watches if w.mark != marks[w.key[0]]]
        if not changed:
            return
        states = await loop.run_in_executor(self._pool, lambda: [self.fetch(*w.key) for w in changed])
        for w, job in zip(changed, states):
            w.mark = marks[w.key[0]]
            w.publish(job)
