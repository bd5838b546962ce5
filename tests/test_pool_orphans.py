"""The analysis pool (preprocess.workers.WorkerPool, which `portrait worker` keeps for its life) leaves no
orphans: when its owner is SIGKILLed, its analysis processes, the fork server and the resource tracker
all end within seconds instead of holding ~380 MB under init."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

OWNER = """
import os, sys, time
from preprocess.workers import WorkerPool
pool = WorkerPool(2, start_method=sys.argv[1])
ex = pool.executor()
pids = {ex.submit(os.getpid).result() for _ in range(8)}
print(pool.method_used, flush=True)
print("ready", flush=True)
time.sleep(600)
"""


def _children() -> dict[int, int]:
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


def _descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, parent in tree.items() if parent == p]
        found.update(kids)
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0])
        return state != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("start_method", ["fork", "forkserver"])  # forkserver: what a worker with torch uses
def test_a_sigkilled_owner_leaves_no_pool_processes(tmp_path, start_method):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    owner = subprocess.Popen([sys.executable, "-c", OWNER, start_method], stdout=subprocess.PIPE, text=True, env=env)
    try:
        method = owner.stdout.readline().strip()
        assert owner.stdout.readline().strip() == "ready"
        kids = _descendants(owner.pid)
        assert len(kids) >= 2, (method, kids)  # the analysis processes (plus the fork server, the tracker)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 15
        while any(_alive(k) for k in kids):
            assert time.monotonic() < deadline, (method, [k for k in kids if _alive(k)])
            time.sleep(0.2)
    finally:
        if owner.poll() is None:
            owner.kill()
