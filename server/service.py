"""The service layer: everything the API, the web form and the CLI do, as plain functions over
the database, the storage and the queue. Routes parse a request, call one method, return its dict.

Every method that takes a `tenant` (a `TenantInfo` or a tenant id) only ever sees that tenant's
rows: another tenant's id is `NotFound`, exactly like an id that does not exist.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Mapping, Optional

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portrait.errors import ConfigError, ImageError, PortraitError, TemplateError

from . import kinds as job_kinds
from . import webhooks
from .db import Database
from .db.models import (TERMINAL_STATES, VISITOR_PREFIX, ApiKey, Batch, IdempotencyRecord, Identity, Job, Photo,
                        Result, Tenant, WebhookDelivery, WorkerRow, is_visitor_name, new_id, now)
from .errors import (BadRequest, Conflict, NotFound, RejectedUpload, ServiceError, TooLarge, TooManyPhotos,
                     Unauthorized)
from .queue import Dispatcher, make_dispatcher
from .queue import lease
from .settings import Settings
from .storage import Storage, make_storage

log = logging.getLogger("portrait.server")

KEY_PREFIX = "pk_"
MAX_PAGE = 200
PRIORITY_RANGE = (-10, 10)
BATCH_PRIORITY = -1  # a studio's batch waits behind interactive jobs (priority 0)
MAX_BATCH_ROWS = 500
_TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# Options the server sets (paths on its disk, devices, processes, limits), refused from requests.
SERVER_OWNED_OPTIONS = frozenset({"models_dir", "device", "dtype", "reference", "identity", "file_name",
                                  "workers", "max_pixels", "max_bytes", "out", "out_dir"})
_FORMAT_EXT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "HEIF": ".heic", "AVIF": ".avif",
               "BMP": ".bmp", "TIFF": ".tif"}


@dataclass(frozen=True)
class TenantInfo:
    id: str
    name: str


def _tid(tenant: "TenantInfo | str") -> str:
    return tenant.id if isinstance(tenant, TenantInfo) else str(tenant)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def iso(t: Optional[float]) -> Optional[str]:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"


# -- cursors: opaque, stable under inserts (ordered by created_at desc, id desc) ----------------------
def encode_cursor(created_at: float, row_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, row_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, row_id = json.loads(raw)
        return float(created_at), str(row_id)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise BadRequest("invalid cursor", code="bad_cursor", details={"cursor": cursor[:100]}) from exc


def _page(s: Session, q, model, cursor: Optional[str], limit: int):
    if not 1 <= int(limit) <= MAX_PAGE:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE}", code="bad_limit", details={"limit": limit})
    if cursor:
        c_at, c_id = decode_cursor(cursor)
        q = q.where(or_(model.created_at < c_at, and_(model.created_at == c_at, model.id < c_id)))
    rows = s.scalars(q.order_by(model.created_at.desc(), model.id.desc()).limit(int(limit) + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
    return rows, next_cursor


class Service:
    """One per process (the app and every worker build their own from the same settings)."""

    def __init__(self, settings: Settings, *, db: Optional[Database] = None, storage: Optional[Storage] = None,
                 dispatcher: Optional[Dispatcher] = None, migrate: bool = True):
        self.settings = settings
        self.db = db or Database(settings.db_url)
        self.storage = storage or make_storage(settings.data_dir, settings.storage_url, settings.storage_endpoint_url,
                                                  settings.storage_cache_hours)
        self.dispatcher = dispatcher or make_dispatcher(settings)
        # The API sets this to build (signed) result URLs: result id -> URL.
        self.result_url: Optional[Callable[[str], str]] = None
        if migrate:
            self.db.migrate()

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None = None, **kwargs) -> "Service":
        return cls(Settings.load(config), **kwargs)

    def close(self) -> None:
        self.db.dispose()

    # -- tenants and keys ------------------------------------------------------------------------
    def create_tenant(self, name: str, *, retention_days: Optional[float] = None,
                      concurrency: Optional[int] = None, webhook_url: Optional[str] = None,
                      visitor: bool = False) -> tuple[dict, str]:
        """A new tenant and its first API key. The key is returned once and never stored. `visitor`: a web
        form visitor's own tenant (named VISITOR_PREFIX + 16 hex digits, a name no other tenant may take),
        deleted by retention once it holds nothing."""
        name = f"{VISITOR_PREFIX}{secrets.token_hex(8)}" if visitor else (name or "").strip()
        if not name or len(name) > 200:
            raise BadRequest("a tenant name is 1 to 200 characters", code="bad_name")
        if not visitor and is_visitor_name(name):
            raise BadRequest(f"tenant names like {name!r} are kept for web form visitors", code="bad_name")
        if webhook_url:
            _check_url(webhook_url, self.settings.webhook_allow_private)
        tenant = Tenant(id=new_id(), name=name, retention_days=retention_days, concurrency=concurrency,
                        webhook_url=webhook_url, webhook_secret=secrets.token_hex(32))
        try:
            with self.db.session(immediate=True) as s:
                s.add(tenant)
                s.flush()
                key = self._new_key(s, tenant.id)
        except IntegrityError as exc:
            raise Conflict(f"a tenant named {name!r} exists already", code="tenant_exists") from exc
        return self._tenant_dict(tenant), key

    def _new_key(self, s: Session, tenant_id: str) -> str:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        s.add(ApiKey(tenant_id=tenant_id, prefix=key[:10], key_hash=hash_key(key)))
        return key

    def create_key(self, tenant: "TenantInfo | str") -> str:
        with self.db.session(immediate=True) as s:
            self._tenant_row(s, _tid(tenant))
            return self._new_key(s, _tid(tenant))

    def find_tenant(self, name_or_id: str) -> dict:
        with self.db.session() as s:
            t = s.scalars(select(Tenant).where(or_(Tenant.name == name_or_id, Tenant.id == name_or_id))).first()
            if t is None:
                raise NotFound(f"no tenant {name_or_id!r}", code="tenant_not_found")
            return self._tenant_dict(t)

    def list_tenants(self) -> list[dict]:
        with self.db.session() as s:
            tenants = s.scalars(select(Tenant).order_by(Tenant.created_at)).all()
            out = []
            for t in tenants:
                d = self._tenant_dict(t)
                keys = s.scalars(select(ApiKey).where(ApiKey.tenant_id == t.id).order_by(ApiKey.created_at)).all()
                d["keys"] = [{"id": k.id, "prefix": k.prefix, "created_at": iso(k.created_at),
                              "last_used_at": iso(k.last_used_at), "revoked": k.revoked_at is not None} for k in keys]
                out.append(d)
            return out

    def revoke(self, name_or_key: str) -> int:
        """Revoke a key (by its id, its prefix or the key itself) or every key of a tenant (by name or id).
        Returns how many keys were revoked."""
        t = now()
        with self.db.session(immediate=True) as s:
            tenant = s.scalars(select(Tenant).where(or_(Tenant.name == name_or_key, Tenant.id == name_or_key))).first()
            if tenant is not None:
                cond = ApiKey.tenant_id == tenant.id
            else:
                cond = or_(ApiKey.id == name_or_key, ApiKey.prefix == name_or_key,
                           ApiKey.key_hash == hash_key(name_or_key))
            keys = s.scalars(select(ApiKey).where(cond, ApiKey.revoked_at.is_(None))).all()
            if not keys and tenant is None:
                raise NotFound(f"no tenant or key {name_or_key!r}", code="key_not_found")
            for k in keys:
                k.revoked_at = t
            return len(keys)

    def authenticate(self, key: Optional[str]) -> TenantInfo:
        """The tenant of an API key; Unauthorized for a missing, unknown or revoked key."""
        if not key:
            raise Unauthorized("missing API key: send `Authorization: Bearer KEY`", code="missing_key")
        with self.db.engine.connect() as conn:  # Core, not the ORM: this runs on every request
            row = conn.execute(select(ApiKey.id, ApiKey.revoked_at, ApiKey.last_used_at, Tenant.id, Tenant.name)
                               .join(Tenant, Tenant.id == ApiKey.tenant_id)
                               .where(ApiKey.key_hash == hash_key(key))).first()
            conn.rollback()
        if row is None or row[1] is not None:
            raise Unauthorized("invalid or revoked API key", code="invalid_key")
        key_id, _revoked, last_used, tenant_id, tenant_name = row
        info = TenantInfo(tenant_id, tenant_name)
        t = now()
        if last_used is None or t - last_used > 60:  # at most one write a minute per key
            with self.db.session(immediate=True) as s:
                s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=t))
        return info

    def update_tenant(self, tenant: "TenantInfo | str", **fields: Any) -> dict:
        allowed = {"retention_days", "concurrency", "webhook_url"}
        bad = sorted(set(fields) - allowed)
        if bad:
            raise BadRequest(f"unknown tenant field(s): {', '.join(bad)}")
        if fields.get("webhook_url"):
            _check_url(fields["webhook_url"], self.settings.webhook_allow_private)
        with self.db.session(immediate=True) as s:
            t = self._tenant_row(s, _tid(tenant))
            for k, v in fields.items():
                setattr(t, k, v)
            return self._tenant_dict(t)

    def _tenant_row(self, s: Session, tenant_id: str) -> Tenant:
        t = s.get(Tenant, tenant_id)
        if t is None:
            raise NotFound("no such tenant", code="tenant_not_found")
        return t

    def _tenant_dict(self, t: Tenant) -> dict:
        return {"id": t.id, "name": t.name, "created_at": iso(t.created_at),
                "retention_days": t.retention_days if t.retention_days is not None else self.settings.retention_days,
                "concurrency": t.concurrency or self.settings.tenant_concurrency, "webhook_url": t.webhook_url}

    def webhook_secret(self, tenant: "TenantInfo | str") -> str:
        """The secret that signs this tenant's webhooks (HMAC-SHA256), shown to its owner."""
        with self.db.session() as s:
            return self._tenant_row(s, _tid(tenant)).webhook_secret

    # -- identities and photos -------------------------------------------------------------------
    def create_identity(self, tenant: "TenantInfo | str", name: str = "") -> dict:
        name = (name or "").strip()
        if len(name) > 200:
            raise BadRequest("an identity name is at most 200 characters", code="bad_name")
        ident = Identity(id=new_id(), tenant_id=_tid(tenant), name=name)
        with self.db.session(immediate=True) as s:
            self._tenant_row(s, _tid(tenant))
            s.add(ident)
        return self._identity_dict(ident, [])

    def _identity_row(self, s: Session, tenant_id: str, identity_id: str) -> Identity:
        ident = s.get(Identity, identity_id) if isinstance(identity_id, str) else None
        if ident is None or ident.tenant_id != tenant_id:
            raise NotFound(f"no identity {str(identity_id)[:64]!r}", code="identity_not_found")
        return ident

    def get_identity(self, tenant: "TenantInfo | str", identity_id: str) -> dict:
        with self.db.session() as s:
            ident = self._identity_row(s, _tid(tenant), identity_id)
            photos = s.scalars(select(Photo).where(Photo.identity_id == ident.id).order_by(Photo.created_at)).all()
            return self._identity_dict(ident, photos)

    def list_identities(self, tenant: "TenantInfo | str", *, cursor: Optional[str] = None, limit: int = 50) -> dict:
        with self.db.session() as s:
            rows, nxt = _page(s, select(Identity).where(Identity.tenant_id == _tid(tenant)), Identity, cursor, limit)
            return {"items": [self._identity_dict(i, None) for i in rows], "next_cursor": nxt}

    def _identity_dict(self, ident: Identity, photos: Optional[Iterable[Photo]]) -> dict:
        d = {"id": ident.id, "name": ident.name, "created_at": iso(ident.created_at),
             "reference_photo_id": ident.reference_photo_id}
        if photos is not None:
            d["photos"] = [self._photo_dict(p) for p in photos]
        return d

    def _photo_dict(self, p: Photo) -> dict:
        return {"id": p.id, "identity_id": p.identity_id, "filename": p.filename, "accepted": p.accepted,
                "reasons": list(p.reasons or []), "message": p.message, "reference": p.is_reference,
                "width": p.width, "height": p.height, "format": p.format, "bytes": p.bytes,
                "created_at": iso(p.created_at)}

    def add_photo(self, tenant: "TenantInfo | str", identity_id: str, filename: Optional[str],
                  stream: "BinaryIO | bytes") -> dict:
        """Take one untrusted upload. Over the byte limit: TooLarge (413), nothing kept. Otherwise a
        photo record with its verdict: accepted, or rejected with a report.json reason code
        (`unreadable`, `too_large` for too many pixels, `too_small`); a rejected upload's bytes are
        not kept. The stored file is named by the server (`<photo id>.<ext of the decoded format>`)."""
        from preprocess.config import PreprocessConfig

        from portrait.imageio import decode_image

        tenant_id = _tid(tenant)
        limit = self.settings.max_upload_bytes
        data = stream if isinstance(stream, bytes) else stream.read(limit + 1)
        display = _display_name(filename)
        if len(data) > limit:
            raise TooLarge(f"{display}: the upload is over the {limit} byte limit", code="too_large",
                           details={"file": display, "limit_bytes": limit})
        with self.db.session() as s:
            ident = self._identity_row(s, tenant_id, identity_id)
            count = s.scalar(select(func.count()).select_from(Photo).where(
                Photo.identity_id == ident.id, Photo.accepted.is_(True))) or 0
        if count >= self.settings.max_photos_per_identity:
            raise TooManyPhotos(f"this identity has {count} photos, the limit is {self.settings.max_photos_per_identity}",
                                details={"limit": self.settings.max_photos_per_identity})
        photo = Photo(id=new_id(), tenant_id=tenant_id, identity_id=identity_id, filename=display,
                      bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), accepted=True, reasons=[],
                      message="", is_reference=False)
        cfg = PreprocessConfig()
        try:
            dec = decode_image(data, name=display, max_side=64, max_pixels=self.settings.max_pixels,
                               max_bytes=limit)
            w, h = dec.original_size
            photo.width, photo.height, photo.format = w, h, dec.format
            if min(w, h) < cfg.min_image_side:
                photo.accepted, photo.reasons = False, ["too_small"]
                photo.message = f"{display}: image is {w}x{h}, the shorter side must be at least {cfg.min_image_side} px"
        except ImageError as exc:
            photo.accepted, photo.reasons, photo.message = False, [exc.code], str(exc)
        except MemoryError:
            photo.accepted, photo.reasons, photo.message = False, ["too_large"], f"{display}: not enough memory to decode"
        if photo.accepted:
            photo.stored_name = self.storage.put_photo(tenant_id, identity_id, photo.id,
                                                       _FORMAT_EXT.get(photo.format or "", ".img"), data)
        try:
            with self.db.session(immediate=True) as s:
                self._identity_row(s, tenant_id, identity_id)  # deleted meanwhile?
                s.add(photo)
                s.get(Identity, identity_id).updated_at = now()
        except BaseException as exc:
            if photo.stored_name:
                self.storage.delete_photo(tenant_id, identity_id, photo.stored_name)
            if isinstance(exc, NotFound):  # the identity was deleted during the upload: leave nothing
                self.storage.delete_identity(tenant_id, identity_id)
            raise
        log.info("photo added", extra={"tenant": tenant_id, "identity": identity_id, "photo": photo.id,
                                       "accepted": photo.accepted, "reasons": photo.reasons})
        return self._photo_dict(photo)

    def add_photos(self, tenant: "TenantInfo | str", identity_id: str,
                   uploads: "Iterable[tuple[Optional[str], BinaryIO]]") -> list[dict]:
        """Take one request's uploads, (file name, seekable stream) each, every one with its verdict.

        The whole request is refused, nothing stored, when any file is over the byte limit (413
        `too_large`, before anything is read), or when every file is refused at intake (not an image:
        422 `unreadable`; too many pixels: 413 `too_large`; the error carries their records)."""
        uploads = list(uploads)
        limit = self.settings.max_upload_bytes
        for filename, stream in uploads:
            stream.seek(0, 2)
            size = stream.tell()
            stream.seek(0)
            if size > limit:
                name = _display_name(filename)
                raise TooLarge(f"{name}: the upload is {size} bytes, over the {limit} byte limit", code="too_large",
                               details={"file": name, "bytes": size, "limit_bytes": limit})
        self.get_identity(tenant, identity_id)  # 404 before reading anything
        records = [self.add_photo(tenant, identity_id, filename, stream) for filename, stream in uploads]
        refused = [r for r in records if not r["accepted"] and set(r["reasons"]) & set(_INTAKE_REFUSALS)]
        if records and len(refused) == len(records):
            for r in refused:
                self.delete_photo(tenant, identity_id, r["id"])
            code = refused[0]["reasons"][0]
            message = refused[0]["message"] if len(refused) == 1 else \
                f"none of the {len(refused)} files is usable: " + "; ".join(r["message"] for r in refused)
            kept = ("filename", "accepted", "reasons", "message", "width", "height", "bytes")
            raise _INTAKE_REFUSALS[code](message, code=code,
                                         details={"photos": [{k: r.get(k) for k in kept} for r in refused]})
        return records

    def delete_photo(self, tenant: "TenantInfo | str", identity_id: str, photo_id: str) -> None:
        with self.db.session(immediate=True) as s:
            self._identity_row(s, _tid(tenant), identity_id)
            p = s.get(Photo, photo_id)
            if p is None or p.identity_id != identity_id:
                raise NotFound(f"no photo {photo_id[:64]!r}", code="photo_not_found")
            if p.stored_name:
                self.storage.delete_photo(_tid(tenant), identity_id, p.stored_name)
            s.delete(p)

    def delete_identity(self, tenant: "TenantInfo | str", identity_id: str) -> None:
        """Remove the identity at once: its photos, crops, identity files, every job's files and
        results, and all their rows. Its running jobs are cancelled first (their workers stop)."""
        tenant_id = _tid(tenant)
        with self.db.session() as s:
            self._identity_row(s, tenant_id, identity_id)
            job_ids = list(s.scalars(select(Job.id).where(Job.identity_id == identity_id)))
        for jid in job_ids:
            lease.cancel(self.db, tenant_id, jid)
        self._purge_identity(tenant_id, identity_id, job_ids)

    def _purge_identity(self, tenant_id: str, identity_id: str, job_ids: list[str]) -> None:
        with self.db.session(immediate=True) as s:
            s.execute(delete(Result).where(Result.identity_id == identity_id))
            if job_ids:
                s.execute(delete(WebhookDelivery).where(WebhookDelivery.job_id.in_(job_ids)))
            s.execute(delete(Job).where(Job.identity_id == identity_id))
            s.execute(delete(Photo).where(Photo.identity_id == identity_id))
            s.execute(delete(Identity).where(Identity.id == identity_id, Identity.tenant_id == tenant_id))
        for jid in job_ids:
            self.storage.delete_job(tenant_id, jid)
        self.storage.delete_identity(tenant_id, identity_id)
        log.info("identity deleted", extra={"tenant": tenant_id, "identity": identity_id, "jobs": len(job_ids)})

    # -- jobs ------------------------------------------------------------------------------------
    def validate_job(self, s: Session, tenant_id: str, kind: str, identity_id: Optional[str], templates: Any,
                     options: Any, priority: Any, webhook_url: Optional[str], *, internal: bool = False) -> dict:
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
        try:
            priority = int(priority or 0)
        except (TypeError, ValueError):
            raise BadRequest("priority must be an integer", code="bad_priority", details={"field": "priority"})
        if not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
            raise BadRequest(f"priority must be in {PRIORITY_RANGE[0]}..{PRIORITY_RANGE[1]}", code="bad_priority",
                             details={"field": "priority"})
        if webhook_url:
            _check_url(webhook_url, self.settings.webhook_allow_private)
        if kind in job_kinds.PUBLIC_KINDS or identity_id is not None:
            if not identity_id:
                raise BadRequest("identity_id is required", code="bad_identity", details={"field": "identity_id"})
            self._identity_row(s, tenant_id, identity_id)
        if kind in job_kinds.NEEDS_PHOTOS:
            n = s.scalar(select(func.count()).select_from(Photo).where(
                Photo.identity_id == identity_id, Photo.accepted.is_(True))) or 0
            if n == 0:
                raise BadRequest("this identity has no accepted photos: upload some first", code="no_photos",
                                 details={"identity_id": identity_id})
        if kind in job_kinds.NEEDS_TEMPLATES and not templates:
            raise BadRequest(f"a {kind} job needs at least one template", code="bad_templates",
                             details={"field": "templates"})
        if kind not in job_kinds.NEEDS_TEMPLATES and templates:
            raise BadRequest(f"a {kind} job takes no templates", code="bad_templates", details={"field": "templates"})
        for name in templates:
            self.check_template(name)
        if kind == "generate":
            self._identity_artefact(s, identity_id)
        if kind == "train":
            self._trainset_job(s, identity_id)
        self.check_options(options)
        try:
            job_kinds.config_for(kind, options)
        except ConfigError as exc:
            raise BadRequest(str(exc), code="bad_options", details={"field": "options"}) from exc
        except PortraitError as exc:
            raise BadRequest(str(exc), code=exc.code, details={"field": "options"}) from exc
        return {"kind": kind, "identity_id": identity_id, "templates": list(templates), "options": dict(options),
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
            elif key == "base_model" and isinstance(value, str) and not _MODEL_NAME.match(value):
                raise BadRequest(f"option '{where}.base_model' must be a model name from the server's manifest, "
                                 f"got {value[:80]!r}", code="bad_options", details={"field": f"{where}.{key}"})
            elif key == "templates" and isinstance(value, list):
                for name in value:
                    self.check_template(str(name))

    def check_template(self, name: str) -> None:
        """A template is named (never a path) and must exist on the server's search path."""
        from portrait.preflight import available_templates
        from portrait.templates import load_template

        if not _TEMPLATE_NAME.match(name or ""):
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

    def _identity_artefact(self, s: Session, identity_id: str) -> Job:
        job = s.scalars(select(Job).where(Job.identity_id == identity_id, Job.kind.in_(("train", "embed")),
                                          Job.state == "succeeded").order_by(Job.finished_at.desc())).first()
        if job is None:
            raise BadRequest("a generate job needs this identity trained or embedded first (a succeeded train or "
                             "embed job)", code="no_identity_model", details={"identity_id": identity_id})
        return job

    def _trainset_job(self, s: Session, identity_id: str) -> Job:
        job = s.scalars(select(Job).where(Job.identity_id == identity_id, Job.kind.in_(("preprocess", "run")),
                                          Job.state == "succeeded").order_by(Job.finished_at.desc())).first()
        if job is None:
            raise BadRequest("a train job needs a succeeded preprocess job of this identity first",
                             code="no_trainset", details={"identity_id": identity_id})
        return job

    def submit_job(self, tenant: "TenantInfo | str", kind: str, identity_id: Optional[str] = None,
                   templates: Optional[list] = None, options: Optional[dict] = None, *, priority: int = 0,
                   idempotency_key: Optional[str] = None, webhook_url: Optional[str] = None,
                   internal: bool = False) -> dict:
        """Validate the whole request, queue the job, return it with its queue position. A repeated
        `idempotency_key` returns the first job (nothing new is queued). QueueFull when full."""
        tenant_id = _tid(tenant)
        if idempotency_key is not None and not (0 < len(idempotency_key) <= 200):
            raise BadRequest("Idempotency-Key must be 1 to 200 characters", code="bad_idempotency_key")
        with self.db.session(immediate=True) as s:
            if idempotency_key:
                old = s.scalars(select(Job).where(Job.tenant_id == tenant_id,
                                                  Job.idempotency_key == idempotency_key)).first()
                if old is not None:
                    return self._job_dict(s, old)
            fields = self.validate_job(s, tenant_id, kind, identity_id, templates, options, priority, webhook_url,
                                       internal=internal)
            lease.check_capacity(s, self.settings.max_queue_size)
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
        job = s.get(Job, job_id) if isinstance(job_id, str) else None
        if job is None or job.tenant_id != tenant_id:
            raise NotFound(f"no job {str(job_id)[:64]!r}", code="job_not_found")
        return job

    def get_job(self, tenant: "TenantInfo | str", job_id: str) -> dict:
        # Core rows, not ORM objects: clients poll this (bench/service.py measures it).
        with self.db.engine.connect() as conn:
            job = conn.execute(select(Job.__table__).where(Job.id == job_id)).first() if isinstance(job_id, str) else None
            if job is None or job.tenant_id != _tid(tenant):
                raise NotFound(f"no job {str(job_id)[:64]!r}", code="job_not_found")
            d = self._job_dict(conn, job)
            conn.rollback()
        return d

    def list_jobs(self, tenant: "TenantInfo | str", *, cursor: Optional[str] = None, limit: int = 50,
                  state: Optional[str] = None, identity_id: Optional[str] = None,
                  batch_id: Optional[str] = None) -> dict:
        q = select(Job).where(Job.tenant_id == _tid(tenant))
        if state:
            q = q.where(Job.state == state)
        if identity_id:
            q = q.where(Job.identity_id == identity_id)
        if batch_id:
            q = q.where(Job.batch_id == batch_id)
        with self.db.session() as s:
            rows, nxt = _page(s, q, Job, cursor, limit)
            return {"items": [self._job_dict(s, j, brief=True) for j in rows], "next_cursor": nxt}

    def cancel_job(self, tenant: "TenantInfo | str", job_id: str) -> dict:
        """Cancel this job only: queued → cancelled now; running → its worker stops at the next check
        and the job ends cancelled; a finished job is left as it is."""
        with self.db.session() as s:
            self._job_row(s, _tid(tenant), job_id)
        lease.cancel(self.db, _tid(tenant), job_id)
        return self.get_job(tenant, job_id)

    def job_report(self, tenant: "TenantInfo | str", job_id: str) -> dict:
        """The job's per-photo verdicts (report.json of its preprocess stage)."""
        with self.db.session() as s:
            job = self._job_row(s, _tid(tenant), job_id)
        path = find_report(self.storage.job_dir(job.tenant_id, job.id, create=False))
        if path is None:
            raise NotFound("this job has no photo report (yet)", code="report_not_found")
        return json.loads(path.read_text())

    def _job_dict(self, s, job, brief: bool = False) -> dict:
        """`s`: a Session or a Connection; `job`: a Job or a Core row of the jobs table."""
        results = (s.execute(select(Result.__table__).where(Result.job_id == job.id).order_by(Result.rank)).all()
                   if job.state == "succeeded" else [])
        d = {
            "id": job.id, "kind": job.kind, "state": job.state, "stage": job.stage or None,
            "progress": round(float(job.progress or 0.0), 4),
            "queue_position": lease.queue_position(s, job),
            "identity_id": job.identity_id, "batch_id": job.batch_id, "templates": list(job.templates or []),
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

    # -- results ---------------------------------------------------------------------------------
    def result_path(self, tenant: "TenantInfo | str | None", result_id: str) -> Path:
        """The image file of a result (tenant None: the caller checked a signed URL instead)."""
        with self.db.session() as s:
            r = s.get(Result, result_id) if isinstance(result_id, str) else None
            if r is None or (tenant is not None and r.tenant_id != _tid(tenant)):
                raise NotFound(f"no result {str(result_id)[:64]!r}", code="result_not_found")
        try:
            return self.storage.open_result(r.tenant_id, r.job_id, r.path)
        except FileNotFoundError as exc:
            raise NotFound("the result's file is gone", code="result_not_found") from exc

    def get_result(self, tenant: "TenantInfo | str", result_id: str) -> dict:
        with self.db.session() as s:
            r = s.get(Result, result_id) if isinstance(result_id, str) else None
            if r is None or r.tenant_id != _tid(tenant):
                raise NotFound(f"no result {str(result_id)[:64]!r}", code="result_not_found")
            return self._result_dict(r) | {"job_id": r.job_id}

    # -- batches ---------------------------------------------------------------------------------
    def submit_batch(self, tenant: "TenantInfo | str", rows: list, *, name: str = "",
                     priority: int = BATCH_PRIORITY, idempotency_key: Optional[str] = None,
                     webhook_url: Optional[str] = None, internal: bool = False) -> dict:
        """One job per row (`{"kind"="run", "identity_id", "templates", "options"}`) under one batch id.
        Every row is validated first: one bad row is a 400 naming it, and nothing is queued."""
        tenant_id = _tid(tenant)
        if not isinstance(rows, list) or not rows:
            raise BadRequest("rows must be a non-empty list", code="bad_rows", details={"field": "rows"})
        if len(rows) > MAX_BATCH_ROWS:
            raise BadRequest(f"at most {MAX_BATCH_ROWS} rows per batch", code="bad_rows", details={"rows": len(rows)})
        with self.db.session(immediate=True) as s:
            if idempotency_key:
                old = s.scalars(select(Batch).where(Batch.tenant_id == tenant_id,
                                                    Batch.idempotency_key == idempotency_key)).first()
                if old is not None:
                    return self._batch_dict(s, old)
            checked = []
            for i, row in enumerate(rows):
                if not isinstance(row, dict):
                    raise BadRequest(f"row {i} is not an object", code="bad_rows", details={"row": i})
                unknown = sorted(set(row) - {"kind", "identity_id", "templates", "options", "priority"})
                if unknown:
                    raise BadRequest(f"row {i}: unknown field(s) {', '.join(unknown)}", code="bad_rows",
                                     details={"row": i})
                try:
                    checked.append(self.validate_job(s, tenant_id, row.get("kind", "run"), row.get("identity_id"),
                                                     row.get("templates"), row.get("options"),
                                                     row.get("priority", priority), webhook_url,
                                                     internal=internal))
                except ServiceError as exc:
                    exc.details = {"row": i, **exc.details}
                    exc.message = f"row {i}: {exc.message}"
                    exc.args = (exc.message,)
                    raise
            lease.check_capacity(s, self.settings.max_queue_size, adding=len(checked))
            batch = Batch(id=new_id(), tenant_id=tenant_id, name=(name or "")[:200], idempotency_key=idempotency_key)
            s.add(batch)
            s.flush()
            t = now()
            jobs = [Job(id=new_id(), tenant_id=tenant_id, batch_id=batch.id, max_attempts=self.settings.max_attempts,
                        created_at=t + i * 1e-6, **f) for i, f in enumerate(checked)]
            s.add_all(jobs)
        self.dispatcher.publish([(j.id, j.priority) for j in jobs])
        log.info("batch queued", extra={"tenant": tenant_id, "batch": batch.id, "jobs": len(jobs)})
        with self.db.session() as s:
            return self._batch_dict(s, s.get(Batch, batch.id))

    def get_batch(self, tenant: "TenantInfo | str", batch_id: str) -> dict:
        with self.db.session() as s:
            b = s.get(Batch, batch_id) if isinstance(batch_id, str) else None
            if b is None or b.tenant_id != _tid(tenant):
                raise NotFound(f"no batch {str(batch_id)[:64]!r}", code="batch_not_found")
            return self._batch_dict(s, b)

    def _batch_dict(self, s: Session, b: Batch) -> dict:
        jobs = s.scalars(select(Job).where(Job.batch_id == b.id).order_by(Job.created_at)).all()
        counts = {st: 0 for st in ("queued", "running", "succeeded", "failed", "cancelled")}
        for j in jobs:
            counts[j.state] = counts.get(j.state, 0) + 1
        progress = sum(1.0 if j.state in TERMINAL_STATES else float(j.progress or 0) for j in jobs) / max(1, len(jobs))
        return {"id": b.id, "name": b.name, "created_at": iso(b.created_at), "progress": round(progress, 4),
                "done": all(j.state in TERMINAL_STATES for j in jobs), "counts": counts,
                "jobs": [{"id": j.id, "row": i, "identity_id": j.identity_id, "state": j.state, "stage": j.stage or None,
                          "progress": round(float(j.progress or 0), 4),
                          "error": ({"code": j.error_code, "message": j.error_message} if j.error_code else None)}
                         for i, j in enumerate(jobs)]}

    # -- idempotent POSTs (identities, photos; jobs and batches keep the key on their row) ---------
    def idempotent_replay(self, tenant: "TenantInfo | str", scope: str, key: Optional[str]) -> Optional[tuple[int, dict]]:
        if not key:
            return None
        with self.db.session() as s:
            rec = s.scalars(select(IdempotencyRecord).where(IdempotencyRecord.tenant_id == _tid(tenant),
                                                            IdempotencyRecord.scope == scope,
                                                            IdempotencyRecord.key == key)).first()
            return (rec.status, rec.body) if rec else None

    def idempotent_store(self, tenant: "TenantInfo | str", scope: str, key: Optional[str], status: int,
                         body: dict) -> None:
        if not key:
            return
        try:
            with self.db.session(immediate=True) as s:
                s.add(IdempotencyRecord(tenant_id=_tid(tenant), scope=scope[:200], key=key[:200], status=status,
                                        body=body))
        except IntegrityError:
            pass  # a concurrent retry stored it first

    # -- ops -------------------------------------------------------------------------------------
    def ping(self) -> bool:
        with self.db.session() as s:
            s.execute(select(1))
        return True

    def stats(self) -> dict:
        """Numbers for /metrics: jobs by state, queue depth, workers' heartbeats, stage durations."""
        with self.db.session() as s:
            by_state = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
            by_kind = [(k, st, n) for k, st, n in s.execute(
                select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)).all()]
            workers = [{"id": w.id, "device": w.device, "mode": w.mode, "heartbeat_at": w.heartbeat_at,
                        "job_id": w.job_id, "jobs_done": w.jobs_done} for w in s.scalars(select(WorkerRow))]
            oldest = s.scalar(select(func.min(Job.created_at)).where(Job.state == "queued"))
            timings = s.execute(select(Job.timings).where(Job.state == "succeeded")
                                .order_by(Job.finished_at.desc()).limit(1000)).scalars().all()
        stages: dict[str, list[float]] = {}
        for t in timings:
            for stage, sec in (t or {}).items():
                if isinstance(sec, (int, float)):
                    stages.setdefault(stage, []).append(float(sec))
        return {"jobs": {st: by_state.get(st, 0) for st in ("queued", "running", "succeeded", "failed", "cancelled")},
                "jobs_by_kind": by_kind, "queue_depth": by_state.get("queued", 0),
                "oldest_queued_age": (now() - oldest) if oldest else 0.0, "workers": workers,
                "stage_seconds": stages}


def find_report(job_dir: Path) -> Optional[Path]:
    for rel in ("report.json", "preprocess/report.json"):
        p = job_dir / rel
        if p.is_file():
            return p
    return None


# Intake refusals that refuse a whole request when every file has one (its error class by reason code).
_INTAKE_REFUSALS = {"unreadable": RejectedUpload, "too_large": TooLarge}


def _display_name(filename: Optional[str]) -> str:
    """The client's file name for display only: no folders, no control characters, bounded length."""
    name = (filename or "").replace("\\", "/").split("/")[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip().lstrip(".")
    return name[:120] or "upload"


def _check_url(url: str, allow_private: bool = False) -> None:
    why = webhooks.url_refusal(url, allow_private)
    if why:
        raise BadRequest(why, code="bad_webhook_url", details={"field": "webhook_url"})
