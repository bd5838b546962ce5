"""What the API and the web form add to the service's dicts: progress labels and signed result URLs."""

from __future__ import annotations

from flask import has_request_context, url_for

from .signing import sign_result

# Labels a person reads under the progress bar, per job-layer stage (unknown stages show their name).
STAGE_LABELS = {
    "": "waiting in the queue",
    "queued": "waiting in the queue",
    "intake": "reading your photos",
    "analyse": "finding faces",
    "select": "choosing the best photos",
    "crops": "preparing the training set",
    "embed": "learning your face",
    "cache": "getting ready to learn your face",
    "train": "learning your face",
    "validate": "trying out your likeness",
    "load models": "loading the models",
    "templates": "painting the portraits",
    "outputs": "painting the portraits",
    "fusion": "painting the portraits",
    "inpaint 1": "painting the face",
    "pass1": "painting the face",
    "inpaint 2": "blending the edges",
    "pass2": "blending the edges",
    "upscale": "sharpening",
    "batch": "working through the rows",
    "styles": "painting the new scenes",
    "candidates": "painting the new scenes",
    "render": "painting the new scenes",
    "detail": "painting the face",
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
