"""Runs one claimed job through the job layer (`portrait.jobs.<kind>`), from the job row's inputs:
the identity's accepted photos, its earlier jobs' artefacts, template names and options. Turns the
job's Result into Result rows and the photos' verdicts (report.json)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import kinds as job_kinds
from .db.models import Identity, Job, Photo
from .queue.lease import Claimed
from .service.common import upload_names


def run(service, job: Claimed, out_dir: Path, *, device: str = "cpu", progress=None, cancel=None,
        pool=None) -> dict:
    """Run the job; its result as a dict (the job layer's Result.to_dict()). `pool`: the worker's
    preprocess.workers.WorkerPool (analysis processes kept, with their face models, between jobs)."""
    if job.kind in job_kinds.INTERNAL_KINDS:
        opts = job_kinds.config_for(job.kind, job.options)
        return job_kinds.run_internal(job.kind, opts, out_dir, progress=progress, cancel=cancel)
    k = job_kinds.KINDS[job.kind]
    config = job_kinds.config_for(job.kind, _with_device(k, job.options, device))
    args = [_source(service, job, k)] + ([list(job.templates)] if k.templates else []) + \
        ([list(job.styles or [])] if k.styles else []) + [out_dir, config]
    kw = {"progress": progress, "cancel": cancel, **({"pool": pool} if k.pool and pool is not None else {})}
    result = k.run(*args, **kw)
    if getattr(result, "ok", True) is False:  # too few usable photos: a user error, with every verdict
        from portrait.errors import NotEnoughPhotosError

        raise NotEnoughPhotosError(result.message)
    return result.to_dict() if hasattr(result, "to_dict") else dict(result)


def _source(service, job: Claimed, k) -> Path:
    """The folder or file the kind works on (its `source` in the kinds table)."""
    storage = service.storage
    if k.source == "photos":
        return storage.photos_dir(job.tenant_id, job.identity_id)
    with service.db.session() as s:
        if k.source == "identity-or-photos":
            src = service.latest_source(s, job.identity_id, "identity")
            if src is None:  # no train/embed job: the job embeds the photos itself
                return storage.photos_dir(job.tenant_id, job.identity_id)
        else:
            src = service.source_job(s, job.identity_id, k.source)
        src_result = dict(src.result or {})
    folder = storage.job_dir(src.tenant_id, src.id, create=False)
    return trainset_dir(folder) if k.source == "trainset" else identity_artefact(folder, src_result)


def _with_device(k, options: dict, device: str) -> dict:
    """The worker's device goes into the config when the config has a `device` field and the
    request did not choose one."""
    if "device" in options or device in ("", None):
        return options
    cls = k.config
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    return {**options, "device": device} if "device" in names else options


def trainset_dir(job_dir: Path) -> Path:
    for rel in ("train", "preprocess/train"):
        if (job_dir / rel).is_dir():
            return job_dir / rel
    return job_dir


def identity_artefact(job_dir: Path, result: dict) -> Path:
    """The identity file a train/embed job wrote: named in its result, else the job folder."""
    for key in ("identity", "path", "file", "lora", "embedding"):
        v = result.get(key)
        if isinstance(v, str):
            p = Path(v) if Path(v).is_absolute() else job_dir / v
            if p.exists() and job_dir.resolve() in p.resolve().parents:
                return p
    return job_dir


def output_rows(out_dir: Path, result: dict) -> list[dict]:
    """Result rows (most alike first) from a job's `outputs`: files inside out_dir only."""
    rows = []
    base = out_dir.resolve()
    for o in result.get("outputs") or []:
        if not isinstance(o, dict) or not o.get("file"):
            continue
        p = Path(o["file"])
        p = (p if p.is_absolute() else base / p).resolve()
        if base not in p.parents or not p.is_file():
            continue
        rows.append({"template": str(o.get("template") or ""), "path": p.relative_to(base).as_posix(),
                     "score": _num(o.get("similarity", o.get("score"))), "distance": _num(o.get("distance"))})
    return rows


def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) else None


def apply_report(s: Session, job: Job, report_path: Optional[Path]) -> None:
    """Copy a preprocess report's per-photo verdicts onto the identity's photo rows."""
    if report_path is None or job.identity_id is None:
        return
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        return
    photos = {p.stored_name: p for p in s.scalars(select(Photo).where(Photo.identity_id == job.identity_id))
              if p.stored_name}
    names = {p.id: p.filename for p in photos.values() if p.filename}
    reference = report.get("reference")
    for entry in report.get("photos") or []:
        p = photos.get(Path(str(entry.get("file", ""))).name)
        if p is None:
            continue
        p.accepted = bool(entry.get("accepted"))
        p.reasons = [str(r) for r in entry.get("reasons") or []]
        p.message = upload_names(str(entry.get("message") or ""), names)  # "the same photo as me.jpg"
        p.is_reference = reference is not None and Path(str(reference)).name == p.stored_name
    ident = s.get(Identity, job.identity_id)
    if ident is not None and reference:
        ref = photos.get(Path(str(reference)).name)
        ident.reference_photo_id = ref.id if ref else None
