"""A fleet's change feed for progress streams: Redis pub/sub on the broker's Redis, or, on PostgreSQL with
no Redis broker, the database's own LISTEN / NOTIFY (PgJobNews).

Whatever changes a job row (a claim, a heartbeat's progress, the end, a cancel, the reaper) announces the
job's id on CHANNEL after its commit (`server.queue.lease`); each server process's stream feed
(`server.async_streams`) listens and reads the changed jobs at once, instead of polling the database every
half second. Announcing never fails a caller: with the broker away the feeds fall back to polling.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Iterable

log = logging.getLogger(__name__)
CHANNEL = "portrait:job-news"


class JobNews:
    def __init__(self, url: str):
        import redis

        self.url = url
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def announce(self, job_ids: Iterable[str]) -> None:
        ids = [j for j in job_ids if j]
        if not ids:
            return
        try:
            self._redis.publish(CHANNEL, " ".join(ids))
        except Exception as exc:  # the broker is away: streams still poll
            log.debug("job news not sent: %s", exc)

    def listen(self, on_news: Callable[[list[str]], None]) -> "Listener":
        return Listener(self.url, on_news)


class _NewsThread:
    """A daemon thread holding one subscription, calling `on_news(ids)` for each message; `close()` ends
    it. `connected` is set while the subscription is live (the feed polls slowly only then); when it drops,
    the feed polls meanwhile and the thread subscribes again 2 s later. Subclasses give `_session()`: one
    subscription, read until `_stop` is set, raising when the connection goes."""

    name = "portrait-job-news"

    def __init__(self, on_news: Callable[[list[str]], None]):
        self._on_news = on_news
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _session(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._session()
            except Exception as exc:  # the broker or database went away: poll meanwhile, subscribe again soon
                self.connected.clear()
                log.debug("%s: %s", self.name, exc)
                self._stop.wait(2.0)

    def close(self) -> None:
        self._stop.set()
        self.connected.clear()


class Listener(_NewsThread):
    """Subscribed to CHANNEL on the broker's Redis."""

    def __init__(self, url: str, on_news: Callable[[list[str]], None]):
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=None, socket_connect_timeout=2)
        super().__init__(on_news)

    def _session(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(CHANNEL)
        self.connected.set()
        while not self._stop.is_set():
            msg = pubsub.get_message(timeout=1.0)
            if msg and msg.get("type") == "message":
                data = msg["data"].decode() if isinstance(msg["data"], bytes) else str(msg["data"])
                self._on_news(data.split())
        pubsub.close()

PG_CHANNEL = "portrait_job_news"


def _libpq_url(db_url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as psycopg takes it (no `+driver`, the password kept)."""
    from sqlalchemy.engine import make_url

    return make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgJobNews:
    """The same feed over PostgreSQL's NOTIFY: a fleet on PostgreSQL with the embedded queue (no Redis)
    still wakes its progress streams at once. `announce` runs pg_notify on the pool's connection (delivered
    when that short transaction commits); each listener holds one connection of its own."""

    def __init__(self, engine):
        self.engine = engine
        self.url = _libpq_url(engine.url.render_as_string(hide_password=False))

    def announce(self, job_ids: Iterable[str]) -> None:
        ids = [j for j in job_ids if j]
        if not ids:
            return
        from sqlalchemy import text

        try:
            with self.engine.begin() as conn:
                conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": PG_CHANNEL,
                                                                           "payload": " ".join(ids)[:7900]})
        except Exception as exc:  # the database is away: streams still poll
            log.debug("job news not sent: %s", exc)

    def listen(self, on_news: Callable[[list[str]], None]) -> "PgListener":
        return PgListener(self.url, on_news)


class PgListener(_NewsThread):
    """LISTENing on PG_CHANNEL on a PostgreSQL connection of its own."""

    name = "portrait-job-news-pg"

    def __init__(self, url: str, on_news: Callable[[list[str]], None]):
        self._url = url
        super().__init__(on_news)

    def _session(self) -> None:
        import psycopg

        with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"LISTEN {PG_CHANNEL}")
            self.connected.set()
            while not self._stop.is_set():
                for note in conn.notifies(timeout=1.0):
                    self._on_news(note.payload.split())
