"""Rows as the API's JSON shapes (shared by the API and the web form)."""

from __future__ import annotations

from datetime import datetime, timezone

from flask import url_for

from ..signing import sign_result

# Labels a person reads under the progress bar, per job-layer stage (unknown stages show their name).
STAGE_LABELS = {
    "": "waiting in the queue",
    "queued": "waiting in the queue",
    "intake": "reading your photos",
    "analyse": "finding faces",
    "analysis": "finding faces",
    "preprocess": "checking your photos",
    "select": "choosing the best photos",
    "crops": "preparing the training set",
    "train": "learning your face",
    "embed": "learning your face",
    "identity": "learning your face",
    "templates": "painting the portraits",
    "generate": "painting the portraits",
    "fusion": "painting the portraits",
    "inpaint": "painting the portraits",
    "retouch": "retouching",
    "upscale": "sharpening",
    "rank": "ranking by likeness",
    "succeeded": "done",
    "failed": "failed",
    "cancelled": "cancelled",
}


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def stage_label(state: str, stage: str | None) -> str:
    if state in ("succeeded", "failed", "cancelled"):
        return STAGE_LABELS[state]
    if state == "queued":
        return STAGE_LABELS["queued"]
    return STAGE_LABELS.get(stage or "", (stage or "working").replace("_", " "))


def result_url(result, external: bool = True) -> str:
    token = sign_result(result.id, result.tenant_id)
    return url_for("api.result", result_id=result.id, token=token, _external=external)


def result_json(result) -> dict:
    return {"id": result.id, "url": result_url(result), "score": result.score, "template": result.template,
            "distance": result.distance, "rank": result.rank}


def error_json(job) -> dict | None:
    if not job.error_code:
        return None
    return {"code": job.error_code, "message": job.error_message or "", "details": job.error_details or {}}


def job_json(job, results=(), position: int | None = None) -> dict:
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "stage": job.stage or None,
        "progress": 1.0 if job.state == "succeeded" else round(float(job.progress or 0.0), 4),
        "queue_position": position if job.state == "queued" else None,
        "results": [result_json(r) for r in results],
        "error": error_json(job),
        "identity_id": job.identity_id,
        "batch_id": job.batch_id,
        "templates": list(job.templates or []),
        "attempts": job.attempts,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
    }


def photo_json(photo) -> dict:
    return {"id": photo.id, "filename": photo.filename, "accepted": photo.accepted,
            "reasons": list(photo.reasons or []), "message": photo.message or None,
            "width": photo.width, "height": photo.height, "bytes": photo.bytes,
            "reference": bool(getattr(photo, "is_reference", False))}


def identity_json(identity, photos=None, photo_count: int | None = None) -> dict:
    d = {"id": identity.id, "name": identity.name, "created_at": iso(identity.created_at)}
    if photos is not None:
        d["photos"] = [photo_json(p) for p in photos]
        d["photo_count"] = len(photos)
    elif photo_count is not None:
        d["photo_count"] = photo_count
    return d
