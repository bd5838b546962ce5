"""Routes of the web form. The JSON routes serve form.js; the HTML ones work without JavaScript."""

from __future__ import annotations

import hmac
import io
import zipfile

from flask import (Blueprint, current_app, jsonify, redirect, render_template, request, send_file,
                   session, url_for)

from ..present import with_label
from ..templates_info import thumbnail_path
from ..errors import BadRequest, NotFound, Unauthorized

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/web")

PUBLIC_ENDPOINTS = {"web.login", "web.static", "web.thumbnail"}
SESSION_LIST_MAX = 200


def svc():
    return current_app.extensions["portrait"]


def front():
    return current_app.extensions["portrait.front"]


@bp.before_request
def _gate():
    mode = front().web_auth
    if mode != "none" and not session.get("web_user") and request.endpoint not in PUBLIC_ENDPOINTS:
        if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "application/json":
            return jsonify({"error": {"code": "unauthorized", "message": "sign in first", "details": {}}}), 401
        return redirect(url_for("web.login", next=request.full_path if request.method == "GET" else None))
    return None


CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


@bp.after_request
def _headers(response):
    """No inline script, no framing, no content sniffing: the form only runs its own static file."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def visitor_tenant() -> str:
    """This visitor's tenant: their own (made on first use) or, with web_auth = key, the key's."""
    tid = session.get("tenant_id")
    if tid is None:
        tenant, _key = svc().create_tenant("", visitor=True)  # the key is never used
        tid = session["tenant_id"] = tenant["id"]
        session.permanent = True
    return tid


def _remember(kind: str, ident: str) -> None:
    items = list(session.get(kind, []))
    items.append(ident)
    session[kind] = items[-SESSION_LIST_MAX:]


def _mine(kind: str, ident: str) -> str:
    """404 (never 403) for anything this session did not create."""
    if ident not in session.get(kind, []):
        raise NotFound(f"{kind[:-1] if kind.endswith('s') else kind} {ident} not found")
    return ident


# -- sign in -----------------------------------------------------------------------------------------------
@bp.route("/login", methods=["GET", "POST"])
def login():
    mode = front().web_auth
    nxt = request.args.get("next") or url_for("web.index")
    if not nxt.startswith("/") or nxt.startswith("//"):
        nxt = url_for("web.index")
    if mode == "none":
        return redirect(nxt)
    error = None
    if request.method == "POST":
        secret = request.form.get("secret", "")
        if mode == "password" and hmac.compare_digest(secret.encode(), front().web_password.encode()):
            session.clear()
            session["web_user"] = "password"
            return redirect(nxt)
        if mode == "key":
            try:
                tenant = svc().authenticate(secret.strip())
            except Unauthorized:
                pass
            else:
                session.clear()
                session["web_user"] = "key"
                session["tenant_id"] = tenant.id
                return redirect(nxt)
        error = "That is not right." if mode == "password" else "That API key is not valid."
    return render_template("web/login.html", mode=mode, next=nxt, error=error), (401 if error else 200)


@bp.route("/logout", methods=["POST"])
def logout():
    session.clear()
    return redirect(url_for("web.index"))


# -- the form ------------------------------------------------------------------------------------------------
@bp.route("/", methods=["GET"])
def index():
    """The form. `?tag=` (repeatable) narrows the gallery to templates with every tag: plain links, so the
    filter works without JavaScript too."""
    from portrait.templates import TAG_FACETS, list_templates

    every = list_templates()
    known = {tag for t in every for tag in t.tags}
    chosen = [t for t in request.args.getlist("tag") if t in known]
    shown = [t for t in every if set(chosen) <= set(t.tags)]
    facets = {facet: [v for v in values if any(v in t.tags for t in every)] for facet, values in TAG_FACETS.items()}

    def link(tag: str) -> str:  # the gallery's URL with `tag` switched on or off
        tags = [t for t in chosen if t != tag] + ([] if tag in chosen else [tag])
        return url_for("web.index", tag=tags)

    from portrait.styles import list_styles

    return render_template("web/index.html", templates=shown, facets=facets, chosen=chosen, tag_link=link,
                           total=len(every), styles=list_styles())


@bp.route("/templates/<name>/thumbnail", methods=["GET"])
def thumbnail(name):
    return send_file(thumbnail_path(name, svc().settings.data_dir), mimetype="image/jpeg", max_age=3600)


@bp.route("/identities", methods=["POST"])
def create_identity():
    body = request.get_json(silent=True) or {}
    ident = svc().create_identity(visitor_tenant(), str(body.get("name") or "my photos")[:200])
    _remember("identities", ident["id"])
    return jsonify({"id": ident["id"]}), 201


@bp.route("/identities/<identity_id>/photos", methods=["POST"])
def upload(identity_id):
    _mine("identities", identity_id)
    files = request.files.getlist("photos")
    if not files:
        raise BadRequest("no file in the field 'photos'", code="no_file")
    return jsonify({"photos": _add_photos(identity_id, files)}), 201


def _add_photos(identity_id: str, files) -> list[dict]:
    return svc().add_photos(visitor_tenant(), identity_id, [(f.filename, f.stream) for f in files])


SCENE_COUNTS = (1, 2, 4, 8)  # the form's "pictures per style"


def _submit(identity_id: str, templates: list[str], mode: str = "templates", styles: list[str] | None = None,
            count: str | None = None) -> dict:
    """A run job on the chosen templates, or (mode "scene") a create job on the chosen styles: the
    identity's photos embedded by the job itself (train-free), `count` pictures per style."""
    if mode == "scene":
        if not styles:
            raise BadRequest("pick at least one style", code="bad_styles")
        n = int(count) if str(count or "").isdigit() and int(count) in SCENE_COUNTS else 4
        job = svc().submit_job(visitor_tenant(), "create", identity_id, [], {"count": n}, styles=list(styles))
    else:
        if not templates:
            raise BadRequest("pick at least one template", code="bad_templates")
        job = svc().submit_job(visitor_tenant(), "run", identity_id, templates, {})
    _remember("jobs", job["id"])
    return job


@bp.route("/jobs", methods=["POST"])
def submit():
    body = request.get_json(silent=True) or {}
    identity_id = _mine("identities", str(body.get("identity_id") or ""))
    job = _submit(identity_id, [str(t) for t in body.get("templates") or []], str(body.get("mode") or "templates"),
                  [str(t) for t in body.get("styles") or []], str(body.get("count") or ""))
    return jsonify({"id": job["id"], "status_url": url_for("web.job_status", job_id=job["id"]),
                    "page_url": url_for("web.job_page", job_id=job["id"])}), 202


@bp.route("/start", methods=["POST"])
def start():
    """The form without JavaScript: photos and templates in one POST, then the self-refreshing status page."""
    files = [f for f in request.files.getlist("photos") if f and f.filename]
    identity_id = request.form.get("identity_id") or ""
    if identity_id:
        _mine("identities", identity_id)
    else:
        if not files:
            raise BadRequest("choose some photos first", code="no_file")
        identity_id = svc().create_identity(visitor_tenant(), "my photos")["id"]
        _remember("identities", identity_id)
    if files:
        _add_photos(identity_id, files)
    job = _submit(identity_id, request.form.getlist("templates"), request.form.get("mode") or "templates",
                  request.form.getlist("styles"), request.form.get("count"))
    return redirect(url_for("web.job_page", job_id=job["id"]), code=303)


# -- following a job ---------------------------------------------------------------------------------------
def _job_view(job_id: str) -> tuple[dict, list]:
    """The job (results pointing at this session's own URLs) and its identity's photos with verdicts."""
    _mine("jobs", job_id)
    tid = visitor_tenant()
    job = with_label(svc().get_job(tid, job_id))
    job["terminal"] = job["state"] in ("succeeded", "failed", "cancelled")
    job["no_worker"] = job["state"] == "queued" and svc().workers_alive() == 0
    for r in job["results"]:
        r["url"] = url_for("web.result", job_id=job_id, result_id=r["id"])
    photos = []
    if job.get("identity_id"):
        try:
            photos = svc().get_identity(tid, job["identity_id"]).get("photos", [])
        except NotFound:
            photos = []
    if job["state"] == "failed" and (job.get("error") or {}).get("code") == "not_enough_photos" and job.get("identity_id"):
        # What to do about it, with the photos kept: how many more to add, and a form that adds them and
        # runs the same templates again.
        from portrait.jobs import RunConfig

        usable = sum(1 for p in photos if p.get("accepted"))
        needed = int((job.get("options") or {}).get("min_photos") or RunConfig.min_photos)
        job["retry"] = {"usable": usable, "more": max(1, needed - usable)}
    return job, photos  # their messages name the visitor's files already (server.service.common.upload_names)


@bp.route("/jobs/<job_id>.json", methods=["GET"])
def job_status(job_id):
    job, photos = _job_view(job_id)
    job["report"] = {"photos": [dict(p, photo_id=p["id"]) for p in photos]}
    return jsonify(job)


@bp.route("/jobs/<job_id>", methods=["GET"])
def job_page(job_id):
    job, photos = _job_view(job_id)
    return render_template("web/job.html", job=job, photos=photos, refresh=front().web_refresh_seconds)


@bp.route("/jobs/<job_id>/cancel", methods=["POST"])
def cancel(job_id):
    """Stop this visitor's job (queued: at once; running: at its next step); no other job is touched."""
    _mine("jobs", job_id)
    svc().cancel_job(visitor_tenant(), job_id)
    return redirect(url_for("web.job_page", job_id=job_id), code=303)


def _result_file(job: dict, result_id: str):
    if result_id not in {r["id"] for r in job["results"]}:
        raise NotFound(f"result {result_id[:64]} not found")
    return svc().result_path(visitor_tenant(), result_id)


@bp.route("/jobs/<job_id>/results/<result_id>", methods=["GET"])
def result(job_id, result_id):
    job, _ = _job_view(job_id)
    return send_file(_result_file(job, result_id), mimetype="image/png",
                     as_attachment=bool(request.args.get("download")),
                     download_name=f"portrait-{result_id[:8]}.png", max_age=0)


@bp.route("/jobs/<job_id>/results.zip", methods=["GET"])
def job_zip(job_id):
    job, _ = _job_view(job_id)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i, r in enumerate(job["results"], 1):
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in (r["template"] or "result"))
            zf.write(_result_file(job, r["id"]), f"{i:02d}-{safe}.png")
    buf.seek(0)
    return send_file(buf, mimetype="application/zip", as_attachment=True,
                     download_name=f"portraits-{job_id[:8]}.zip")
