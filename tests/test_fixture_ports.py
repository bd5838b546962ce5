"""The service tests' real servers start on a free port even when another process takes the port first
(free_port closes its probe socket before redis-server binds; the helper must retry, not fail)."""

from __future__ import annotations

import itertools
import socket

import pytest

import helpers_fleet


@pytest.mark.slow
def test_redis_server_retries_when_its_port_is_taken(tmp_path, monkeypatch):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    ports = itertools.chain([taken], iter(helpers_fleet.free_port, None))
    monkeypatch.setattr(helpers_fleet, "free_port", lambda: next(ports))
    try:
        with helpers_fleet.redis_server(tmp_path) as url:
            import redis

            assert not url.endswith(f":{taken}/0")
            assert redis.Redis.from_url(url).ping()
    finally:
        squatter.close()
