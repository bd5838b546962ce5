"""The routes of `/api/v1`. Each one authenticates, calls one function of `server.service` and
returns its JSON shape (server/api/present.py); errors become `{"error": {...}}` in server/app.py."""

from __future__ import annotations

import functools
import json
import time

from flask import Response, current_app, g, jsonify, make_response, request, send_file, stream_with_context
from flask_smorest import Blueprint

from ..errors import BadRequest, NotFound, Unauthorized
from ..service.common import tenant_id_of
from ..signing import verify_result
from ..streams import ASYNC_STREAM, STREAM_OPEN, SSE_HEADERS, SSE_KEEPALIVE, SSE_RETRY_MS, StreamHub, sse_event
from . import schemas as s
from ..present import with_label
from ..templates_info import style_list, template_list, thumbnail_path

blp = Blueprint("api", __name__, url_prefix="/api/v1", description="portrait REST API")

ERRORS = {"description": 'an error: {"error": {"code", "message", "details"}}', "content": {
    "application/json": {"schema": s.ErrorBody}}}


def _errors(*codes: int, responses: dict | None = None, **doc) -> dict:
    """`blp.doc` keywords: the error responses `codes` (plus `responses`, e.g. a non-JSON 200)."""
    return dict(doc, responses={**{str(c): ERRORS for c in codes}, **(responses or {})})


def svc():
    """This app's `server.service.Service` (built once in create_app)."""
    return current_app.extensions["portrait"]


def front():
    return current_app.extensions["portrait.front"]


def streams_hub() -> StreamHub:
    """This process's stream hub (one poller for every open event stream), made on first use."""
    app = current_app
    hub = app.extensions.get("portrait.streams")
    if hub is None:
        f = front()
        hub = app.extensions.setdefault("portrait.streams", StreamHub(svc().db, poll_seconds=f.sse_poll_seconds,
                                                                        max_streams=f.sse_max_streams))
    return hub


def async_feed():
    """The asyncio stream feed when server/asgi.py serves this request and will stream it itself, else None."""
    if request.environ.get("asgi.scope", {}).get(ASYNC_STREAM):
        return current_app.extensions.get("portrait.async_streams")
    return None


def tenant():
    """The tenant of the request's `Authorization: Bearer KEY` (401 when missing or not valid)."""
    if "tenant" not in g:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("missing API key: send the header 'Authorization: Bearer KEY'", code="missing_key")
        g.tenant = svc().authenticate(key.strip())
    return g.tenant


PUBLIC = {"api.thumbnail", "api.result"}  # no key needed (an <img src>, a signed URL)


@blp.before_request
def _authenticate_first():
    """Every route but the public ones authenticates before it reads its arguments: a request without a
    valid key gets 401, never a 400 about a body it had no right to send."""
    if request.endpoint not in PUBLIC and request.method != "OPTIONS":
        tenant()


def _fingerprint() -> str:
    """What the request asks for, not how it was encoded: the JSON body's content (key order aside), or
    each uploaded file's field, name and bytes (a multipart boundary differs on every retry)."""
    import hashlib

    h = hashlib.sha256()
    if request.is_json:
        h.update(json.dumps(request.get_json(silent=True), sort_keys=True).encode("utf-8", "surrogatepass"))
    for field, f in sorted(request.files.items(multi=True), key=lambda kv: (kv[0], kv[1].filename or "")):
        h.update(f"{field}\0{f.filename}\0".encode("utf-8", "surrogatepass"))
        for chunk in iter(lambda: f.stream.read(1 << 20), b""):
            h.update(chunk)
        f.stream.seek(0)
    for field, value in sorted(request.form.items(multi=True)):
        h.update(f"{field}={value}\0".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def idempotent(status: int):
    """Honour `Idempotency-Key` on a POST: the first answer (2xx) is kept for the tenant, the path and
    the key, and a retry gets it again (header `Idempotent-Replayed: true`) instead of doing the work
    twice."""

    def wrap(view):
        @functools.wraps(view)
        def inner(*args, **kwargs):
            key = request.headers.get("Idempotency-Key", "").strip()
            if not key:
                return view(*args, **kwargs)
            if len(key) > 200:
                raise BadRequest("Idempotency-Key is longer than 200 characters", code="bad_idempotency_key")
            scope = f"{request.method} {request.path}"
            fingerprint = _fingerprint()
            # One of any number of concurrent requests with this key runs; the others wait for its answer.
            seen = svc().idempotent_claim(tenant(), scope, key, fingerprint)  # 422 another request, 409 still running
            if seen is not None:
                replay = make_response(jsonify(seen[1]), seen[0])
                replay.headers["Idempotent-Replayed"] = "true"
                return replay
            try:
                body = view(*args, **kwargs)
            except BaseException:
                svc().idempotent_release(tenant(), scope, key)  # an error is not kept: a retry runs afresh
                raise
            svc().idempotent_store(tenant(), scope, key, status, body, fingerprint)
            return body

        return inner

    return wrap


def add_photos(tenant_ref, identity_id: str, files) -> list[dict]:
    """A request's uploaded files through the service (its rules refuse or keep the whole request)."""
    return svc().add_photos(tenant_ref, identity_id, [(f.filename, f.stream) for f in files])


# -- the key's tenant -----------------------------------------------------------------------------------
@blp.route("/tenant", methods=["GET"])
@blp.response(200, s.TenantInfo)
@blp.doc(**_errors(401))
def get_tenant():
    """This key's tenant: its retention, concurrency, tenant-wide webhook and the webhook signing secret"""
    who = tenant()
    return dict(svc().find_tenant(who.id), webhook_secret=svc().webhook_secret(who))


@blp.route("/tenant", methods=["PATCH"])
@blp.arguments(s.TenantPatch)
@blp.response(200, s.TenantInfo)
@blp.doc(**_errors(400, 401))
def patch_tenant(body):
    """Set (or clear with null) the tenant-wide webhook URL"""
    who = tenant()
    return dict(svc().update_tenant(who, webhook_url=body["webhook_url"]), webhook_secret=svc().webhook_secret(who))


# -- identities ----------------------------------------------------------------------------------------
@blp.route("/identities", methods=["POST"])
@blp.arguments(s.IdentityIn)
@blp.response(201, s.Identity)
@blp.doc(**_errors(400, 401, 429))
@idempotent(201)
def create_identity(body):
    """Create an identity (one person) → 201 {"id", ...}"""
    return svc().create_identity(tenant(), body["name"])


@blp.route("/identities", methods=["GET"])
@blp.arguments(s.ListArgs, location="query")
@blp.response(200, s.IdentityPage)
@blp.doc(**_errors(400, 401))
def list_identities(args):
    """The tenant's identities, newest first, a page at a time (`cursor` from the last page)"""
    return svc().list_identities(tenant(), cursor=args["cursor"], limit=args["limit"] or front().page_size)


@blp.route("/identities/<identity_id>", methods=["GET"])
@blp.response(200, s.Identity)
@blp.doc(**_errors(401, 404))
def get_identity(identity_id):
    """One identity with its photos and their verdicts"""
    return svc().get_identity(tenant(), identity_id)


@blp.route("/identities/<identity_id>", methods=["DELETE"])
@blp.response(204)
@blp.doc(**_errors(401, 404))
def delete_identity(identity_id):
    """Delete an identity at once: every photo, crop, identity file, job, job file and result"""
    svc().delete_identity(tenant(), identity_id)
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
    """Upload photos: the multipart field `photos`, repeated, or one file per request → 201 with a
    record (verdict) per photo; 422 `unreadable` / 413 `too_large` when every file is refused"""
    files = [f for f in request.files.getlist("photos") if f is not None]
    if not files:
        raise BadRequest("no file: send multipart/form-data with the field 'photos'", code="no_file",
                         details={"field": "photos"})
    return {"photos": add_photos(tenant(), identity_id, files)}


# -- jobs ------------------------------------------------------------------------------------------------
@blp.route("/jobs", methods=["POST"])
@blp.arguments(s.JobIn)
@blp.response(202, s.Job)
@blp.doc(**_errors(400, 401, 404, 429))
def submit_job(body):
    """Submit a job; the whole request (identity, templates, options) is checked first → 202 with its
    id and queue position. A repeated `Idempotency-Key` returns the first job."""
    return svc().submit_job(tenant(), body["kind"], body["identity_id"], body["templates"], body["options"],
                            styles=body["styles"], priority=body["priority"] or 0, webhook_url=body["webhook_url"],
                            idempotency_key=request.headers.get("Idempotency-Key", "").strip() or None)


@blp.route("/jobs", methods=["GET"])
@blp.arguments(s.JobListArgs, location="query")
@blp.response(200, s.JobPage)
@blp.doc(**_errors(400, 401))
def list_jobs(args):
    """The tenant's jobs, newest first, a page at a time"""
    return svc().list_jobs(tenant(), cursor=args["cursor"], limit=args["limit"] or front().page_size,
                           state=args["state"])


@blp.route("/jobs/<job_id>", methods=["GET"])
@blp.response(200, s.Job)
@blp.doc(**_errors(401, 404))
def get_job(job_id):
    """A job's state, stage, progress (0..1), queue position, results and error"""
    return svc().get_job(tenant(), job_id)


@blp.route("/jobs/<job_id>/cancel", methods=["POST"])
@blp.response(202, s.Job)
@blp.doc(**_errors(401, 404))
def cancel_job(job_id):
    """Cancel a queued or running job (no other job is touched); an ended job is returned unchanged"""
    return svc().cancel_job(tenant(), job_id)


@blp.route("/jobs/<job_id>/report", methods=["GET"])
@blp.response(200, s.Report)
@blp.doc(**_errors(401, 404))
def job_report(job_id):
    """The job's per-photo verdicts (report.json: accepted, reason codes, scores, the reference)"""
    return svc().job_report(tenant(), job_id)


@blp.route("/jobs/<job_id>/events", methods=["GET"])
@blp.doc(**_errors(401, 404, responses={"200": {
    "description": "server-sent events: `progress` while the job changes, then one `end` with the final job",
    "content": {"text/event-stream": {"schema": {"type": "string"}}}}}))
def job_events(job_id):
    """Progress as server-sent events (`event: progress`, `data: <job JSON>`), closing when the job ends"""
    service, who = svc(), tenant()
    first = with_label(service.get_job(who, job_id))  # 401 / 404 before the stream starts
    feed = async_feed()
    if feed is not None:  # under `portrait serve`: server/asgi.py streams it as a coroutine, not on this thread
        feed.check_room(job_id)  # 503 too_many_streams
        return jsonify(job=first, tenant=tenant_id_of(who), base=request.host_url), 200, {STREAM_OPEN: "1"}
    hub, limit = streams_hub(), front().sse_max_seconds
    release = hub.open(job_id)  # 503 too_many_streams before the stream starts; given back when it closes

    def stream():
        # The reconnect hint first, then the current state at once (a reconnecting client's Last-Event-ID
        # only tells us it saw an older state): each event's id is its state's, so equal states share ids.
        yield f"retry: {SSE_RETRY_MS}\n\n"
        job, start, seen, last = first, time.monotonic(), hub.version(job_id), None
        while True:
            text, event_id, ended = sse_event(job, job_id)
            if event_id != last:
                yield text
                last = event_id
            if ended or time.monotonic() - start > limit:
                return
            now_version = hub.wait(job_id, seen, SSE_KEEPALIVE)
            if now_version == seen:  # quiet: proxies keep the stream open, and a gone client is noticed
                yield ": keep-alive\n\n"
                continue
            seen = now_version
            try:
                job = with_label(service.get_job(who, job_id))
            except NotFound:  # deleted meanwhile
                job = None

    response = Response(stream_with_context(stream()), mimetype="text/event-stream", headers=SSE_HEADERS)
    response.call_on_close(release)
    return response


# -- templates and results ---------------------------------------------------------------------------------
@blp.route("/templates", methods=["GET"])
@blp.arguments(s.TemplateArgs, location="query")
@blp.response(200, s.TemplateInfo(many=True))
@blp.doc(**_errors(400, 401))
def templates(args):
    """The templates a job can use, with tags, provenance and thumbnails; `?tag=studio&tag=bw` filters.
    A run job may also name `auto`, `auto:N` or `auto:N:TAG,TAG`: the N that suit the identity's photos"""
    tenant()
    return template_list(args["tag"])


@blp.route("/styles", methods=["GET"])
@blp.arguments(s.TemplateArgs, location="query")
@blp.response(200, s.StyleInfo(many=True))
@blp.doc(**_errors(400, 401))
def styles(args):
    """The style packs a create job can name (`styles`), with tags and provenance; `?tag=bw` filters"""
    tenant()
    return style_list(args["tag"])


@blp.route("/templates/<name>/thumbnail", methods=["GET"])
@blp.doc(**_errors(404, security=[], responses={"200": {
    "description": "a JPEG thumbnail", "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}}))
def thumbnail(name):
    """A template's thumbnail (public, so that an <img src> can show it)"""
    return send_file(thumbnail_path(name, svc().settings.data_dir), mimetype="image/jpeg", max_age=3600)


@blp.route("/results/<result_id>", methods=["GET"])
@blp.arguments(s.ResultArgs, location="query")
@blp.doc(**_errors(401, 404, security=[{"bearer": []}, {}], responses={"200": {
    "description": "the image", "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}}))
def result(args, result_id):
    """One result image: with the Authorization header, or with the signed `token` of the job's `url`"""
    if args.get("token"):
        verify_result(args["token"], result_id)
        path = svc().result_path(None, result_id)
    else:
        path = svc().result_path(tenant(), result_id)
    return send_file(path, mimetype="image/png", download_name=f"portrait-{result_id[:8]}.png",
                     as_attachment=bool(args.get("download")), max_age=0)


# -- batches --------------------------------------------------------------------------------------------------
@blp.route("/batches", methods=["POST"])
@blp.arguments(s.BatchIn)
@blp.response(202, s.Batch)
@blp.doc(**_errors(400, 401, 404, 429))
def submit_batch(body):
    """One job per row under one batch id; every row is checked before any job is queued. A repeated
    `Idempotency-Key` returns the first batch."""
    rows = [{k: v for k, v in dict(row, kind=row.get("kind") or body["kind"]).items() if k != "name"}
            for row in body["rows"]]
    return svc().submit_batch(tenant(), rows, name=body["name"] or "", webhook_url=body["webhook_url"],
                              idempotency_key=request.headers.get("Idempotency-Key", "").strip() or None)


@blp.route("/batches/<batch_id>", methods=["GET"])
@blp.response(200, s.Batch)
@blp.doc(**_errors(401, 404))
def get_batch(batch_id):
    """A batch's progress (0..1 over its rows), jobs by state (`counts`), `done`, and every row's job"""
    return svc().get_batch(tenant(), batch_id)
