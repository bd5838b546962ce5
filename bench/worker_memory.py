"""Benchmark: a worker's memory (RSS) idle and after `run` jobs on the sample photos (classic path, the
worker's own analysis processes counted too). Goal: under 400 MB.

    python bench/worker_memory.py            # 2 run jobs on studio-grey
    python bench/worker_memory.py --jobs 4
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--template", default="studio-grey")
    args = ap.parse_args()

    import psutil

    from portrait.samples import write_sample_photos
    from server.service import Service
    from server.settings import Settings
    from server.worker import Worker

    tmp = Path(tempfile.mkdtemp(prefix="bench-worker-memory-"))
    proc = psutil.Process()

    def mb(rss: float) -> str:
        return f"{rss / 2**20:.0f}"

    def tree() -> float:
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])

    svc = Service(Settings.load({"data_dir": tmp / "data"}, env={}))
    t, _ = svc.create_tenant("bench")
    ident = svc.create_identity(t["id"], "sample")["id"]
    for p in write_sample_photos(tmp / "samples"):
        svc.add_photo(t["id"], ident, p.name, p.read_bytes())
    rows = [("idle (service loaded)", proc.memory_info().rss, tree(), "")]
    for i in range(args.jobs):
        job = svc.submit_job(t["id"], "run", ident, [args.template], {"variants": 1, "max_tries": 1})
        Worker(svc.settings, service=svc).run_forever(max_jobs=1)
        state = svc.get_job(t["id"], job["id"])["state"]
        rows.append((f"after run job {i + 1}", proc.memory_info().rss, tree(), state))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    heavy = [m for m in ("torch", "diffusers", "transformers", "spandrel", "onnxruntime") if m in sys.modules]
    print(f"\nportrait bench/worker_memory.py — {args.jobs} run jobs on {args.template}, the sample photos\n")
    print("| moment | worker RSS MB | with its analysis processes MB | job |\n|---|---|---|---|")
    for name, rss, total, state in rows:
        print(f"| {name} | {mb(rss)} | {mb(total)} | {state} |")
    print(f"\npeak worker RSS {mb(peak)} MB; heavy libraries imported: {', '.join(heavy) or 'none'}")
    worst = max(total for _, _, total, _ in rows)
    print(f"goal: under 400 MB with the analysis processes: {'met' if worst < 400 * 2**20 else 'NOT met'} ({mb(worst)} MB)")
    svc.close()


if __name__ == "__main__":  # the analysis processes start from a fork server: the guard is needed
    main()
