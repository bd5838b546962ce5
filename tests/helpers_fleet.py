"""Real components for the service's tests: Debian's redis-server and PostgreSQL started in temp
folders on free loopback ports, and `portrait worker` processes (`python -m portrait worker`)."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional


def free_port() -> int:
    """A port free now. Another process may take it before our server binds it: the servers that cannot
    bind port 0 and name it (redis-server, PostgreSQL) start through `on_a_free_port`, which retries."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def on_a_free_port(start: Callable[[int], object], what: str, attempts: int = 5):
    """`start(port)` on a fresh free port until it does not fail with PortTaken (bounded)."""
    for _ in range(attempts):
        try:
            return start(free_port())
        except PortTaken:
            continue
    raise AssertionError(f"{what}: {attempts} free ports were each taken before it could bind them")


class PortTaken(Exception):
    """The server could not bind the port it was given (someone took it after free_port closed it)."""


def wait_for(pred: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll `pred` until it returns something truthy (bounded: fails after `timeout` seconds)."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def binary(name: str, *globs: str) -> str:
    found = shutil.which(name) or next((p for g in globs for p in sorted(glob.glob(g))), None)
    assert found, f"{name} is not installed (.ci/run installs it with apt)"
    return found


@contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """A private redis-server on a free port; yields its URL."""
    exe = binary("redis-server")
    tmp.mkdir(parents=True, exist_ok=True)
    import redis

    def start(port: int):
        log = tmp / f"redis-{port}.log"
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp), "--save", "",
                                 "--appendonly", "no", "--protected-mode", "yes", "--logfile", str(log)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, retry=Retry(NoBackoff(), 0))

        def up():
            if proc.poll() is not None:
                text = log.read_text() if log.exists() else ""
                if "Address already in use" in text:
                    raise PortTaken(port)
                raise AssertionError(f"redis-server exited: {text[-2000:]}")
            try:  # ours, not whatever took the port: the server names its pid
                return client.info("server")["process_id"] == proc.pid
            except (redis.ConnectionError, redis.TimeoutError):
                return False

        try:
            wait_for(up, 60, "redis-server")
        except BaseException:
            proc.kill()
            proc.wait(10)
            raise
        return proc, port

    proc, port = on_a_free_port(start, "redis-server")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def postgres_server(tmp: Path) -> Iterator[str]:
    """A private PostgreSQL cluster (initdb in a temp folder, run as the `postgres` user when we are
    root); yields a SQLAlchemy URL of a fresh database."""
    initdb = binary("initdb", "/usr/lib/postgresql/*/bin/initdb")
    pg_ctl = binary("pg_ctl", "/usr/lib/postgresql/*/bin/pg_ctl")
    if os.geteuid() == 0:  # postgres refuses to run as root; its user cannot enter pytest's 0700 folders
        tmp = Path(tempfile.mkdtemp(prefix="portrait-pg-"))
        cleanup = tmp
    else:
        cleanup = None
    datadir = tmp / "pgdata"
    sockdir = tmp / "pgsock"
    sockdir.mkdir(parents=True, exist_ok=True)
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
        shutil.chown(sockdir, "postgres")
        os.chmod(tmp, 0o755)
        as_user = ["runuser", "-u", "postgres", "--"]
    done = subprocess.run(as_user + [initdb, "-D", str(datadir), "-U", "portrait", "-A", "trust", "--no-sync",
                                     "-E", "UTF8"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 0, f"initdb failed: {done.stderr}"

    def start(port: int) -> int:
        log = tmp / f"pg-{port}.log"
        opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sockdir} " \
               f"-c fsync=off -c max_connections=200"
        done = subprocess.run(as_user + [pg_ctl, "-D", str(datadir), "-o", opts, "-l", str(log), "-w",
                                         "-t", "60", "start"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
        text = log.read_text() if log.exists() else ""
        if done.returncode != 0 and "Address already in use" in text:
            raise PortTaken(port)
        assert done.returncode == 0, f"postgres did not start: {done.stderr} {text[-2000:]}"
        return port

    port = on_a_free_port(start, "postgres")
    try:
        import psycopg

        def up():
            try:
                with psycopg.connect(f"host=127.0.0.1 port={port} user=portrait dbname=postgres",
                                     autocommit=True) as c:
                    c.execute("CREATE DATABASE portrait")
                return True
            except psycopg.OperationalError:
                return False

        wait_for(up, 30, "postgres")
        yield f"postgresql://portrait@127.0.0.1:{port}/portrait"
    finally:
        subprocess.run(as_user + [pg_ctl, "-D", str(datadir), "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)


def service_env(data_dir: Path, **settings) -> dict:
    env = dict(os.environ)
    env["PORTRAIT_DATA_DIR"] = str(data_dir)
    for k, v in settings.items():
        env["PORTRAIT_" + k.upper()] = str(v)
    return env


def start_worker(data_dir: Path, log: Path, *args: str, **settings) -> subprocess.Popen:
    """`python -m portrait worker` with settings passed as PORTRAIT_* variables; stderr to `log`."""
    fh = open(log, "ab")
    return subprocess.Popen([sys.executable, "-m", "portrait", "worker", "--data-dir", str(data_dir), *args],
                            env=service_env(data_dir, **settings), stdout=fh, stderr=fh,
                            start_new_session=True)


def stop(procs, sig=signal.SIGTERM, timeout: float = 20) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def pid_of(worker_id: Optional[str]) -> Optional[int]:
    """A worker id is host:pid:random."""
    return int(worker_id.split(":")[1]) if worker_id else None


def runs(job_dir: Path) -> tuple[int, int]:
    """(starts, ends) an internal `_sleep` job logged in its folder."""
    p = job_dir / "runs.log"
    lines = p.read_text().split() if p.exists() else []
    return lines.count("start"), lines.count("end")
