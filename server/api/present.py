"""What the API and the web form add to the service's dicts: progress labels and signed result URLs."""

from __future__ import annotations

from flask import has_request_context, url_for

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


def stage_label(state: str, stage: str | None) -> str:
    if state in ("succeeded", "failed", "cancelled"):
        return STAGE_LABELS[state]
    if state == "queued":
        return STAGE_LABELS["queued"]
    return STAGE_LABELS.get(stage or "", (stage or "working").replace("_", " "))


def with_label(job: dict) -> dict:
    """The service's job dict plus `label`, the words shown under a progress bar."""
    return dict(job, label=stage_label(job["state"], job.get("stage")))


def signed_result_url(result_id: str) -> str | None:
    """The service's `result_url` hook: a signed URL that works without a header (None outside a request)."""
    if not has_request_context():
        return None
    return url_for("api.result", result_id=result_id, token=sign_result(result_id), _external=True)
