"""The routes of `/api/v1`. Each one authenticates, calls one function of `server.service` and
returns its JSON shape (server/api/present.py); errors become `{"error": {...}}` in server/app.py."""

from __future__ import annotations

import functools
import json
import time

from flask import Response, current_app, g, jsonify, make_response, request, send_file, stream_with_context
from flask_smorest import Blueprint

from .. import service
from ..errors import BadRequest, NotFound, Unauthorized
from ..signing import verify_result
from . import schemas as s
from .present import identity_json, job_json, photo_json, stage_label
from .templates_info import template_list, thumbnail_path

blp = Blueprint("api", __name__, url_prefix="/api/v1", description="portrait REST API")

ERRORS = {"description": 'an error: {"error": {"code", "message", "details"}}', "content": {
    "application/json": {"schema": s.ErrorBody}}}


def _errors(*codes: int, responses: dict | None = None, **doc) -> dict:
    """`blp.doc` keywords: the error responses `codes` (plus `responses`, e.g. a non-JSON 200)."""
    return dict(doc, responses={**{str(c): ERRORS for c in codes}, **(responses or {})})


def settings():
    return current_app.extensions["portrait.settings"]


def front():
    return current_app.extensions["portrait.front"]


def db():
    return service.get_db()


def tenant_id() -> str:
    """The tenant of the request's `Authorization: Bearer KEY` (401 when missing or not valid)."""
    if "tenant_id" not in g:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("missing API key: send the header 'Authorization: Bearer KEY'")
        g.tenant_id = service.authenticate(db(), key.strip()).id
    return g.tenant_id


def idempotent(status: int):
    """Honour `Idempotency-Key` on a POST: the first response (2xx) is stored for the tenant, the
    route and the key, and a retry gets it again instead of doing the work twice."""

    def wrap(view):
        @functools.wraps(view)
        def inner(*args, **kwargs):
            key = request.headers.get("Idempotency-Key", "").strip()
            if not key:
                return view(*args, **kwargs)
            if len(key) > 200:
                raise BadRequest("Idempotency-Key is longer than 200 characters")
            scope = f"{request.method} {request.path}"
            seen = service.idempotency_lookup(db(), tenant_id(), scope, key)
            if seen is not None:
                replay = make_response(jsonify(seen[1]), seen[0])
                replay.headers["Idempotent-Replayed"] = "true"
                return replay
            body = view(*args, **kwargs)
            body = body[0] if isinstance(body, tuple) else body
            stored = service.idempotency_store(db(), tenant_id(), scope, key, status, body)
            if stored is not None:  # another request with this key finished first: its answer wins
                return make_response(jsonify(stored[1]), stored[0])
            return body

        return inner

    return wrap


# -- identities ----------------------------------------------------------------------------------------
@blp.route("/identities", methods=["POST"])
@blp.arguments(s.IdentityIn)
@blp.response(201, s.Identity)
@blp.doc(**_errors(400, 401, 429))
@idempotent(201)
def create_identity(body):
    """Create an identity (one person) → 201 {"id"}"""
    ident = service.create_identity(db(), tenant_id(), body["name"])
    return identity_json(ident, photos=[])


@blp.route("/identities", methods=["GET"])
@blp.arguments(s.ListArgs, location="query")
@blp.response(200, s.IdentityPage)
@blp.doc(**_errors(400, 401))
def list_identities(args):
    """The tenant's identities, newest first, a page at a time (`cursor` from the last page)"""
    items, cursor = service.list_identities(db(), tenant_id(), cursor=args["cursor"],
                                            limit=args["limit"] or front().page_size)
    return {"items": [identity_json(i) for i in items], "next_cursor": cursor}


@blp.route("/identities/<identity_id>", methods=["GET"])
@blp.response(200, s.Identity)
@blp.doc(**_errors(401, 404))
def get_identity(identity_id):
    """One identity with its photos and their verdicts"""
    ident = service.get_identity(db(), tenant_id(), identity_id)
    return identity_json(ident, photos=service.list_photos(db(), tenant_id(), identity_id))


@blp.route("/identities/<identity_id>", methods=["DELETE"])
@blp.response(204)
@blp.doc(**_errors(401, 404))
def delete_identity(identity_id):
    """Delete an identity at once: every photo, crop, identity file, job, job file and result"""
    service.delete_identity(db(), settings(), tenant_id(), identity_id)
    return ""


PHOTOS_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["photos"],
    "properties": {"photos": {"type": "array", "items": {"type": "string", "format": "binary"},
                              "description": "one or more image files (JPEG, PNG, WebP, HEIC)"}}}}}}


@blp.route("/identities/<identity_id>/photos", methods=["POST"])
@blp.response(201, s.PhotoList)
@blp.doc(**_errors(400, 401, 404, 409, 413, 422, 429, requestBody=PHOTOS_BODY))
@idempotent(201)
def upload_photos(identity_id):
    """Upload photos: the multipart field `photos`, repeated, or one file per request → a record per photo"""
    tid = tenant_id()
    files = [f for f in request.files.getlist("photos") if f is not None]
    if not files:
        raise BadRequest("no file: send multipart/form-data with the field 'photos'",
                         details={"field": "photos"})
    service.get_identity(db(), tid, identity_id)  # 404 before reading any upload
    records = []
    for f in files:
        data = f.stream.read(settings().max_upload_bytes + 1)
        records.append(service.add_photo(db(), settings(), tid, identity_id, f.filename or "photo", data))
    return {"photos": [photo_json(p) for p in records]}


# -- jobs ------------------------------------------------------------------------------------------------
@blp.route("/jobs", methods=["POST"])
@blp.arguments(s.JobIn)
@blp.response(202, s.Job)
@blp.doc(**_errors(400, 401, 404, 429))
@idempotent(202)
def submit_job(body):
    """Submit a job; the whole request (identity, templates, options) is checked first → 202 with its
    id and queue position"""
    job, position = service.submit_job(
        db(), settings(), tenant_id(), kind=body["kind"], identity_id=body["identity_id"],
        templates=body["templates"], options=body["options"], priority=body["priority"],
        webhook_url=body["webhook_url"], idempotency_key=request.headers.get("Idempotency-Key"))
    return job_json(job, [], position)


def _job(job_id: str) -> dict:
    job, results, position = service.get_job(db(), tenant_id(), job_id)
    return job_json(job, results, position)


@blp.route("/jobs", methods=["GET"])
@blp.arguments(s.JobListArgs, location="query")
@blp.response(200, s.JobPage)
@blp.doc(**_errors(400, 401))
def list_jobs(args):
    """The tenant's jobs, newest first, a page at a time"""
    items, cursor = service.list_jobs(db(), tenant_id(), cursor=args["cursor"],
                                      limit=args["limit"] or front().page_size, state=args["state"])
    return {"items": [job_json(*item) for item in items], "next_cursor": cursor}


@blp.route("/jobs/<job_id>", methods=["GET"])
@blp.response(200, s.Job)
@blp.doc(**_errors(401, 404))
def get_job(job_id):
    """A job's state, stage, progress (0..1), queue position, results and error"""
    return _job(job_id)


@blp.route("/jobs/<job_id>/cancel", methods=["POST"])
@blp.response(202, s.Job)
@blp.doc(**_errors(401, 404))
def cancel_job(job_id):
    """Cancel a queued or running job (no other job is touched); an ended job is returned unchanged"""
    service.cancel_job(db(), tenant_id(), job_id)
    return _job(job_id)


@blp.route("/jobs/<job_id>/report", methods=["GET"])
@blp.response(200, s.Report)
@blp.doc(**_errors(401, 404))
def job_report(job_id):
    """The job's per-photo verdicts (report.json: accepted, reason codes, scores, the reference)"""
    return service.job_report(db(), settings(), tenant_id(), job_id)


@blp.route("/jobs/<job_id>/events", methods=["GET"])
@blp.doc(**_errors(401, 404, responses={"200": {
    "description": "server-sent events: `progress` while the job changes, then one `end` with the final job",
    "content": {"text/event-stream": {"schema": {"type": "string"}}}}}))
def job_events(job_id):
    """Progress as server-sent events (`event: progress`, `data: <job JSON>`), closing when the job ends"""
    first = _job(job_id)  # 401 / 404 before the stream starts
    tid, poll, limit = g.tenant_id, front().sse_poll_seconds, front().sse_max_seconds

    def stream():
        last, job, start = None, first, time.monotonic()
        while True:
            snapshot = json.dumps(job, sort_keys=True)
            ended = job["state"] in ("succeeded", "failed", "cancelled")
            if snapshot != last:
                yield f"event: {'end' if ended else 'progress'}\ndata: {json.dumps(job)}\n\n"
                last = snapshot
            if ended or time.monotonic() - start > limit:
                return
            time.sleep(poll)
            try:
                found, results, position = service.get_job(db(), tid, job_id)
            except NotFound:  # deleted meanwhile
                yield f"event: end\ndata: {json.dumps({'id': job_id, 'state': 'deleted'})}\n\n"
                return
            job = job_json(found, results, position)
            job["label"] = stage_label(found.state, found.stage)

    first["label"] = stage_label(first["state"], first["stage"])
    return Response(stream_with_context(stream()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# -- templates and results ---------------------------------------------------------------------------------
@blp.route("/templates", methods=["GET"])
@blp.response(200, s.TemplateInfo(many=True))
@blp.doc(**_errors(401))
def templates():
    """The templates a job can use, with thumbnails"""
    tenant_id()
    return template_list()


@blp.route("/templates/<name>/thumbnail", methods=["GET"])
@blp.doc(**_errors(404, security=[], responses={"200": {
    "description": "a JPEG thumbnail", "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}}))
def thumbnail(name):
    """A template's thumbnail (public, so that an <img src> can show it)"""
    return send_file(thumbnail_path(name, settings().data_dir), mimetype="image/jpeg", max_age=3600)


@blp.route("/results/<result_id>", methods=["GET"])
@blp.arguments(s.ResultArgs, location="query")
@blp.doc(**_errors(401, 404, security=[{"bearer": []}, {}], responses={"200": {
    "description": "the image", "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}}))
def result(args, result_id):
    """One result image: with the Authorization header, or with the signed `token` of the job's `url`"""
    tid = verify_result(args["token"], result_id) if args.get("token") else tenant_id()
    path = service.result_path(db(), settings(), tid, result_id)
    return send_file(path, mimetype="image/png", download_name=f"{result_id}.png",
                     as_attachment=bool(args.get("download")), max_age=0)


# -- batches --------------------------------------------------------------------------------------------------
@blp.route("/batches", methods=["POST"])
@blp.arguments(s.BatchIn)
@blp.response(202, s.Batch)
@blp.doc(**_errors(400, 401, 404, 429))
@idempotent(202)
def submit_batch(body):
    """One job per row under one batch id; every row is checked before any job is queued"""
    batch = service.submit_batch(db(), settings(), tenant_id(), kind=body["kind"], rows=body["rows"],
                                 webhook_url=body["webhook_url"],
                                 idempotency_key=request.headers.get("Idempotency-Key"))
    return _batch(batch)


@blp.route("/batches/<batch_id>", methods=["GET"])
@blp.response(200, s.Batch)
@blp.doc(**_errors(401, 404))
def get_batch(batch_id):
    """A batch's progress (0..1 over its rows), jobs by state, and every job"""
    return _batch(service.get_batch(db(), tenant_id(), batch_id))


def _batch(batch) -> dict:
    """`batch` from the service: (row, [(job, results, position)])."""
    row, jobs = batch
    out = [job_json(*j) for j in jobs]
    summary = {state: 0 for state in s.JOB_STATES}
    for j in out:
        summary[j["state"]] += 1
    ended = summary["succeeded"] + summary["failed"] + summary["cancelled"]
    state = "done" if out and ended == len(out) else ("running" if summary["running"] or ended else "queued")
    progress = sum(1.0 if j["state"] in ("succeeded", "failed", "cancelled") else j["progress"] for j in out)
    return {"id": row.id, "state": state, "progress": round(progress / max(len(out), 1), 4),
            "summary": summary, "jobs": out}
