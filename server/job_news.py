"""A fleet's change feed for progress streams: Redis pub/sub on the broker's Redis.

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


class Listener:
    """A daemon thread subscribed to CHANNEL, calling `on_news(ids)` for each message; `close()` ends it.
    `connected` is set while the subscription is live (the feed polls slowly only then)."""

    def __init__(self, url: str, on_news: Callable[[list[str]], None]):
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=None, socket_connect_timeout=2)
        self._on_news = on_news
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="portrait-job-news", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                self.connected.set()
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=1.0)
                    if msg and msg.get("type") == "message":
                        data = msg["data"].decode() if isinstance(msg["data"], bytes) else str(msg["data"])
                        self._on_news(data.split())
                pubsub.close()
            except Exception as exc:  # the broker went away: poll meanwhile, subscribe again soon
                self.connected.clear()
                log.debug("job news: %s", exc)
                self._stop.wait(2.0)

    def close(self) -> None:
        self._stop.set()
        self.connected.clear()
