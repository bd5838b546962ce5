"""Service methods for jobs and their results: validation, submission, listing, cancelling, reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portrait.errors import ConfigError, PortraitError, TemplateError

from .. import kinds as job_kinds
from ..db.models import Job, Photo, Result, new_id
from ..errors import BadRequest, KeyReused, NotFound
from ..queue import lease
from .common import user_text
from .common import (MODEL_NAME, PRIORITY_RANGE, SERVER_OWNED_OPTIONS, TEMPLATE_NAME, TenantInfo, by_idempotency_key,
                     check_webhook_url, find_report, iso, log, owned_row, page, tenant_id_of)


class JobsService:
    """Jobs and their results: validation, submission, listing, cancelling, reports.

    One part of `Service`: it uses the service's settings, db, storage and dispatcher, and the other
    parts' methods, through self."""

    def validate_job(self, s: Session, tenant_id: str, kind: str, identity_id: Optional[str], templates: Any,
                     options: Any, priority: Any, webhook_url: Optional[str], *, internal: bool = False,
                     styles: Any = None) -> dict:
        """Check a whole job request before anything is queued; the normalised fields."""
        kinds = job_kinds.PUBLIC_KINDS + (job_kinds.INTERNAL_KINDS if internal else ())
        if kind not in kinds:
            raise BadRequest(f"unknown job kind {str(kind)[:40]!r}; one of {', '.join(job_kinds.PUBLIC_KINDS)}",
                             code="bad_kind", details={"field": "kind"})
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise BadRequest("options must be an object", code="bad_options", details={"field": "options"})
        if templates is None:
            templates = []
        if not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
            raise BadRequest("templates must be a list of template names", code="bad_templates",
                             details={"field": "templates"})
        styles = [] if styles is None else styles
        if not isinstance(styles, list) or not all(isinstance(t, str) for t in styles) or len(styles) > 50:
            raise BadRequest("styles must be a list of at most 50 style names", code="bad_styles",
                             details={"field": "styles"})
        try:
            priority = int(priority or 0)
        except (TypeError, ValueError):
            raise BadRequest("priority must be an integer", code="bad_priority", details={"field": "priority"})
        if not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
            raise BadRequest(f"priority must be in {PRIORITY_RANGE[0]}..{PRIORITY_RANGE[1]}", code="bad_priority",
                             details={"field": "priority"})
        if webhook_url:
            check_webhook_url(webhook_url, self.settings.webhook_allow_private)
        if kind in job_kinds.PUBLIC_KINDS or identity_id is not None:
            if not identity_id:
                raise BadRequest("identity_id is required", code="bad_identity", details={"field": "identity_id"})
            self._identity_row(s, tenant_id, identity_id)
        k = job_kinds.KINDS.get(kind)  # None: an internal kind
        # identity-or-photos: the identity's newest train/embed file when there is one, else its photos.
        if k is not None and (k.source == "photos" or k.source == "identity-or-photos"
                              and self.latest_source(s, identity_id, "identity") is None):
            n = s.scalar(select(func.count()).select_from(Photo).where(
                Photo.identity_id == identity_id, Photo.accepted.is_(True))) or 0
            if n == 0:
                raise BadRequest("this identity has no accepted photos: upload some first", code="no_photos",
                                 details={"identity_id": identity_id})
        if k is not None and k.templates and not templates:
            raise BadRequest(f"a {kind} job needs at least one template", code="bad_templates",
                             details={"field": "templates"})
        if not (k is not None and k.templates) and templates:
            raise BadRequest(f"a {kind} job takes no templates", code="bad_templates", details={"field": "templates"})
        for name in templates:
            self.check_template(name, auto_ok=kind == "run")
        wants_styles = k is not None and k.styles
        if wants_styles and not styles:
            raise BadRequest(f"a {kind} job needs at least one style (GET /api/v1/styles lists them)",
                             code="bad_styles", details={"field": "styles"})
        if not wants_styles and styles:
            raise BadRequest(f"a {kind} job takes no styles", code="bad_styles", details={"field": "styles"})
        for name in styles:
            self.check_style(name)
        if k is not None and k.source in ("trainset", "identity"):
            self.source_job(s, identity_id, k.source, kind)
        self.check_options(options)
        try:
            job_kinds.config_for(kind, options)
        except ConfigError as exc:
            raise BadRequest(str(exc), code="bad_options", details={"field": "options"}) from exc
        except PortraitError as exc:
            raise BadRequest(str(exc), code=exc.code, details={"field": "options"}) from exc
        return {"kind": kind, "identity_id": identity_id, "templates": list(templates), "styles": list(styles),
                "options": dict(options),
                "priority": priority, "webhook_url": webhook_url or None}

    def check_options(self, options: dict, where: str = "options") -> None:
        """Options name no server path and no hardware: those are the server's (models, devices,
        worker processes, limits). Model and template references are names, never paths."""
        for key, value in options.items():
            if key in SERVER_OWNED_OPTIONS:
                raise BadRequest(f"option '{where}.{key}' is set by the server, not by a request",
                                 code="bad_options", details={"field": f"{where}.{key}"})
            if isinstance(value, dict):
                self.check_options(value, f"{where}.{key}")
            elif key == "base_model" and isinstance(value, str) and not MODEL_NAME.match(value):
                raise BadRequest(f"option '{where}.base_model' must be a model name from the server's manifest, "
                                 f"got {value[:80]!r}", code="bad_options", details={"field": f"{where}.{key}"})
            elif key == "templates" and isinstance(value, list):
                for name in value:
                    self.check_template(str(name))

    def check_template(self, name: str, auto_ok: bool = False) -> None:
        """A template is named (never a path) and must exist on the server's search path; `auto_ok`: a run
        job may also say auto[:N[:TAGS]] (the N templates that suit the photos), checked here."""
        from portrait.templates import available_templates
        from portrait.templates.choice import AutoRequest, candidates, parse_auto
        from portrait.templates import list_templates, load_template

        try:
            auto: AutoRequest | None = parse_auto(name)
            if auto is not None and not auto_ok:
                raise ConfigError(f"template {name!r}: auto chooses templates for run jobs only; name the templates")
            if auto is not None:
                candidates(list_templates(), auto)
                return
        except ConfigError as exc:
            raise BadRequest(str(exc), code="bad_template", details={"template": name[:80]}) from exc

        if not TEMPLATE_NAME.match(name or ""):
            names = available_templates()
            raise BadRequest(f"template {name[:80]!r} is not a template name; available: {', '.join(names) or 'none'}",
                             code="bad_template", details={"template": name[:80], "available": names})
        try:
            load_template(name)
        except TemplateError as exc:
            # The client gets the names it may use, never the server's folders; the log keeps the whole reason.
            log.warning("template refused", extra={"code": "bad_template", "reasons": [name, str(exc)]})
            names = available_templates()
            raise BadRequest(f"template {name!r} is not available on this server; available: "
                             f"{', '.join(names) or 'none'}", code="bad_template",
                             details={"template": name, "available": names}) from exc

    def check_style(self, name: str) -> None:
        """A style is named (never a path) and must be on the server's style search path."""
        from portrait.errors import StyleError
        from portrait.styles import list_styles, load_style

        def available() -> list[str]:
            return [st.name for st in list_styles()]

        if not TEMPLATE_NAME.match(name or ""):
            raise BadRequest(f"style {name[:80]!r} is not a style name; available: {', '.join(available()) or 'none'}",
                             code="bad_style", details={"style": name[:80], "available": available()})
        try:
            load_style(name)
        except StyleError as exc:
            log.warning("style refused", extra={"code": "bad_style", "reasons": [name, str(exc)]})
            raise BadRequest(f"style {name!r} is not available on this server; available: "
                             f"{', '.join(available()) or 'none'}", code="bad_style",
                             details={"style": name, "available": available()}) from exc

    def latest_source(self, s: Session, identity_id: str, source: str) -> Optional[Job]:
        """The identity's newest succeeded job providing `source` ("trainset" | "identity"), or None."""
        return s.scalars(select(Job).where(Job.identity_id == identity_id, Job.kind.in_(job_kinds.PROVIDERS[source]),
                                           Job.state == "succeeded").order_by(Job.finished_at.desc())).first()

    def source_job(self, s: Session, identity_id: str, source: str, kind: str | None = None) -> Job:
        """The identity's latest succeeded job that provides `source` ("trainset": preprocess or run;
        "identity": train or embed, from the kinds table); BadRequest naming what to run first."""
        providers = job_kinds.PROVIDERS[source]
        job = self.latest_source(s, identity_id, source)
        if job is None:
            needs = {"trainset": ("train", "no_trainset"), "identity": ("generate", "no_identity_model")}
            who, code = needs[source]
            raise BadRequest(f"a {kind or who} job needs a succeeded {' or '.join(providers)} job of this identity first",
                             code=code, details={"identity_id": identity_id})
        return job

    def submit_job(self, tenant: "TenantInfo | str", kind: str, identity_id: Optional[str] = None,
                   templates: Optional[list] = None, options: Optional[dict] = None, *, priority: int = 0,
                   idempotency_key: Optional[str] = None, webhook_url: Optional[str] = None,
                   internal: bool = False, styles: Optional[list] = None) -> dict:
        """Validate the whole request, queue the job, return it with its queue position. A repeated
        `idempotency_key` returns the first job (nothing new is queued). QueueFull when full."""
        tenant_id = tenant_id_of(tenant)
        if idempotency_key is not None and not (0 < len(idempotency_key) <= 200):
            raise BadRequest("Idempotency-Key must be 1 to 200 characters", code="bad_idempotency_key")
        with self.db.session(immediate=True) as s:
            old = by_idempotency_key(s, Job, tenant_id, idempotency_key)
            if old is not None:
                asked = (kind, identity_id, list(templates or []), list(styles or []), dict(options or {}))
                if (old.kind, old.identity_id, list(old.templates or []), list(old.styles or []),
                        dict(old.options or {})) != asked:
                    raise KeyReused(f"Idempotency-Key {idempotency_key[:60]!r} was first sent with another job "
                                    "request; use a new key for a new job", details={"key": idempotency_key,
                                                                                     "job_id": old.id})
                return self._job_dict(s, old)
            fields = self.validate_job(s, tenant_id, kind, identity_id, templates, options, priority, webhook_url,
                                       internal=internal, styles=styles)
            lease.check_capacity(s, self.settings, tenant_id)
            job = Job(id=new_id(), tenant_id=tenant_id, max_attempts=self.settings.max_attempts,
                      idempotency_key=idempotency_key, **fields)
            s.add(job)
            try:
                s.flush()
            except IntegrityError:  # the same key raced in from a retry
                s.rollback()
                old = s.scalars(select(Job).where(Job.tenant_id == tenant_id,
                                                  Job.idempotency_key == idempotency_key)).first()
                if old is None:
                    raise
                return self._job_dict(s, old)
        self.dispatcher.publish([(job.id, job.priority)])
        log.info("job queued", extra={"tenant": tenant_id, "job": job.id, "kind": job.kind})
        with self.db.session() as s:
            return self._job_dict(s, s.get(Job, job.id))

    def _job_row(self, s: Session, tenant_id: str, job_id: str) -> Job:
        return owned_row(s, Job, tenant_id, job_id, "job")

    def get_job(self, tenant: "TenantInfo | str", job_id: str) -> dict:
        # Core rows, not ORM objects: clients poll this (bench/service.py measures it).
        with self.db.engine.connect() as conn:
            job = conn.execute(select(Job.__table__).where(Job.id == job_id)).first() if isinstance(job_id, str) else None
            if job is None or job.tenant_id != tenant_id_of(tenant):
                raise NotFound(f"no job {str(job_id)[:64]!r}", code="job_not_found")
            d = self._job_dict(conn, job)
            conn.rollback()
        return d

    def list_jobs(self, tenant: "TenantInfo | str", *, cursor: Optional[str] = None, limit: int = 50,
                  state: Optional[str] = None, identity_id: Optional[str] = None,
                  batch_id: Optional[str] = None) -> dict:
        q = select(Job).where(Job.tenant_id == tenant_id_of(tenant))
        if state:
            q = q.where(Job.state == state)
        if identity_id:
            q = q.where(Job.identity_id == identity_id)
        if batch_id:
            q = q.where(Job.batch_id == batch_id)
        with self.db.session() as s:
            rows, nxt = page(s, q, Job, cursor, limit)
            return {"items": [self._job_dict(s, j, brief=True) for j in rows], "next_cursor": nxt}

    def cancel_job(self, tenant: "TenantInfo | str", job_id: str) -> dict:
        """Cancel this job only: queued → cancelled now; running → its worker stops at the next check
        and the job ends cancelled; a finished job is left as it is."""
        with self.db.session() as s:
            self._job_row(s, tenant_id_of(tenant), job_id)
        lease.cancel(self.db, tenant_id_of(tenant), job_id)
        return self.get_job(tenant, job_id)

    def job_report(self, tenant: "TenantInfo | str", job_id: str) -> dict:
        """The job's per-photo verdicts (report.json of its preprocess stage)."""
        with self.db.session() as s:
            job = self._job_row(s, tenant_id_of(tenant), job_id)
        job_dir = self.storage.job_dir(job.tenant_id, job.id, create=False)
        path = find_report(job_dir)
        if path is None:
            raise NotFound("this job has no photo report (yet)", code="report_not_found")
        # Files by the names they were uploaded under, and no server path (the report is written for the CLI).
        return user_text(json.loads(path.read_text()), self.photo_names(job.identity_id), self.settings.data_dir,
                         job_dir)

    def _job_dict(self, s, job, brief: bool = False) -> dict:
        """`s`: a Session or a Connection; `job`: a Job or a Core row of the jobs table."""
        results = (s.execute(select(Result.__table__).where(Result.job_id == job.id).order_by(Result.rank)).all()
                   if job.state == "succeeded" else [])
        d = {
            "id": job.id, "kind": job.kind, "state": job.state, "stage": job.stage or None,
            "progress": round(float(job.progress or 0.0), 4),
            "queue_position": lease.queue_position(s, job),
            "identity_id": job.identity_id, "batch_id": job.batch_id, "templates": list(job.templates or []),
            "styles": list(job.styles or []),
            "priority": job.priority, "attempts": job.attempts, "max_attempts": job.max_attempts,
            "cancel_requested": bool(job.cancel_requested),
            "results": [self._result_dict(r) for r in results],
            "error": ({"code": job.error_code, "message": job.error_message, "details": job.error_details or {}}
                      if job.error_code else None),
            "created_at": iso(job.created_at), "started_at": iso(job.started_at), "finished_at": iso(job.finished_at),
        }
        if not brief:
            d["options"] = dict(job.options or {})
            d["timings"] = dict(job.timings or {})
            d["worker"] = job.worker
        return d

    def _result_dict(self, r: Result) -> dict:
        return {"id": r.id, "template": r.template, "score": r.score, "distance": r.distance, "rank": r.rank,
                "url": self.result_url(r.id) if self.result_url else None}

    def result_path(self, tenant: "TenantInfo | str | None", result_id: str) -> Path:
        """The image file of a result (tenant None: the caller checked a signed URL instead)."""
        with self.db.session() as s:
            r = s.get(Result, result_id) if isinstance(result_id, str) else None
            if r is None or (tenant is not None and r.tenant_id != tenant_id_of(tenant)):
                raise NotFound(f"no result {str(result_id)[:64]!r}", code="result_not_found")
        try:
            return self.storage.open_result(r.tenant_id, r.job_id, r.path)
        except FileNotFoundError as exc:
            raise NotFound("the result's file is gone", code="result_not_found") from exc

    def get_result(self, tenant: "TenantInfo | str", result_id: str) -> dict:
        with self.db.session() as s:
            r = s.get(Result, result_id) if isinstance(result_id, str) else None
            if r is None or r.tenant_id != tenant_id_of(tenant):
                raise NotFound(f"no result {str(result_id)[:64]!r}", code="result_not_found")
            return self._result_dict(r) | {"job_id": r.job_id}
