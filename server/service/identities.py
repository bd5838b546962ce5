"""Service methods for identities and their photos (the whole-upload rule)."""

from __future__ import annotations

import hashlib
import json
import threading
from typing import BinaryIO, Iterable, Optional

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from portrait.errors import ImageError

from ..db.models import IdempotencyRecord, Identity, Job, Photo, Result, WebhookDelivery, new_id, now
from ..errors import BadRequest, NotFound, TooLarge, TooManyPhotos
from ..queue import lease
from .common import FORMAT_EXT, INTAKE_REFUSALS, TenantInfo, display_name, iso, log, owned_row, page, tenant_id_of


class IdentitiesService:
    """Identities and their photos, with the whole-upload rule.

    One part of `Service`: it uses the service's settings, db, storage and dispatcher, and the other
    parts' methods, through self."""

    def create_identity(self, tenant: "TenantInfo | str", name: str = "") -> dict:
        name = (name or "").strip()
        if len(name) > 200:
            raise BadRequest("an identity name is at most 200 characters", code="bad_name")
        ident = Identity(id=new_id(), tenant_id=tenant_id_of(tenant), name=name)
        with self.db.session(immediate=True) as s:
            self._tenant_row(s, tenant_id_of(tenant))
            s.add(ident)
        return self._identity_dict(ident, [])

    def _identity_row(self, s: Session, tenant_id: str, identity_id: str) -> Identity:
        return owned_row(s, Identity, tenant_id, identity_id, "identity")

    def get_identity(self, tenant: "TenantInfo | str", identity_id: str) -> dict:
        with self.db.session() as s:
            ident = self._identity_row(s, tenant_id_of(tenant), identity_id)
            photos = s.scalars(select(Photo).where(Photo.identity_id == ident.id).order_by(Photo.created_at)).all()
            return self._identity_dict(ident, photos)

    def list_identities(self, tenant: "TenantInfo | str", *, cursor: Optional[str] = None, limit: int = 50) -> dict:
        with self.db.session() as s:
            rows, nxt = page(s, select(Identity).where(Identity.tenant_id == tenant_id_of(tenant)), Identity, cursor, limit)
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

    def photo_names(self, identity_id: Optional[str]) -> dict[str, str]:
        """photo id -> the name it was uploaded under, for an identity's photos ({} for none)."""
        if not identity_id:
            return {}
        with self.db.engine.connect() as c:
            rows = c.execute(select(Photo.id, Photo.filename).where(Photo.identity_id == identity_id)).all()
            c.rollback()
        return {r.id: r.filename for r in rows if r.filename}

    def add_photo(self, tenant: "TenantInfo | str", identity_id: str, filename: Optional[str],
                  stream: "BinaryIO | bytes") -> dict:
        """Take one untrusted upload. Over the byte limit: TooLarge (413), nothing kept. Otherwise a
        photo record with its verdict: accepted, or rejected with a report.json reason code
        (`unreadable`, `too_large` for too many pixels, `too_small`); a rejected upload's bytes are
        not kept. The stored file is named by the server (`<photo id>.<ext of the decoded format>`)."""
        from preprocess.config import PreprocessConfig

        tenant_id = tenant_id_of(tenant)
        limit = self.settings.max_upload_bytes
        data = stream if isinstance(stream, bytes) else stream.read(limit + 1)
        display = display_name(filename)
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
            w, h, fmt = _check_upload(data, display, self.settings.max_pixels, limit)
            photo.width, photo.height, photo.format = w, h, fmt
            if min(w, h) < cfg.min_image_side:
                photo.accepted, photo.reasons = False, ["too_small"]
                photo.message = f"{display}: image is {w}x{h}, the shorter side must be at least {cfg.min_image_side} px"
        except ImageError as exc:
            photo.accepted, photo.reasons, photo.message = False, [exc.code], str(exc)
        except MemoryError:
            photo.accepted, photo.reasons, photo.message = False, ["too_large"], f"{display}: not enough memory to decode"
        if photo.accepted:
            photo.stored_name = self.storage.put_photo(tenant_id, identity_id, photo.id,
                                                       FORMAT_EXT.get(photo.format or "", ".img"), data)
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
                name = display_name(filename)
                raise TooLarge(f"{name}: the upload is {size} bytes, over the {limit} byte limit", code="too_large",
                               details={"file": name, "bytes": size, "limit_bytes": limit})
        self.get_identity(tenant, identity_id)  # 404 before reading anything
        records = [self.add_photo(tenant, identity_id, filename, stream) for filename, stream in uploads]
        refused = [r for r in records if not r["accepted"] and set(r["reasons"]) & set(INTAKE_REFUSALS)]
        if records and len(refused) == len(records):
            for r in refused:
                self.delete_photo(tenant, identity_id, r["id"])
            code = refused[0]["reasons"][0]
            message = refused[0]["message"] if len(refused) == 1 else \
                f"none of the {len(refused)} files is usable: " + "; ".join(r["message"] for r in refused)
            kept = ("filename", "accepted", "reasons", "message", "width", "height", "bytes")
            raise INTAKE_REFUSALS[code](message, code=code,
                                         details={"photos": [{k: r.get(k) for k in kept} for r in refused]})
        return records

    def delete_photo(self, tenant: "TenantInfo | str", identity_id: str, photo_id: str) -> None:
        with self.db.session(immediate=True) as s:
            self._identity_row(s, tenant_id_of(tenant), identity_id)
            p = s.get(Photo, photo_id)
            if p is None or p.identity_id != identity_id:
                raise NotFound(f"no photo {photo_id[:64]!r}", code="photo_not_found")
            if p.stored_name:
                self.storage.delete_photo(tenant_id_of(tenant), identity_id, p.stored_name)
            s.delete(p)

    def delete_identity(self, tenant: "TenantInfo | str", identity_id: str) -> None:
        """Remove the identity at once: its photos, crops, identity files, every job's files and
        results, and all their rows. Its running jobs are asked to stop first (their workers see it at
        the next heartbeat, or find the row gone); its queued jobs are deleted as they are, so every open
        progress stream of its jobs ends with `deleted`, never `cancelled`."""
        tenant_id = tenant_id_of(tenant)
        with self.db.session() as s:
            self._identity_row(s, tenant_id, identity_id)
            jobs = s.execute(select(Job.id, Job.state).where(Job.identity_id == identity_id)).all()
        for jid, state in jobs:
            if state == "running":
                lease.cancel(self.db, tenant_id, jid)
        self.purge_identity(tenant_id, identity_id, [jid for jid, _ in jobs])

    def purge_identity(self, tenant_id: str, identity_id: str, job_ids: list[str]) -> None:
        with self.db.session(immediate=True) as s:
            s.execute(delete(Result).where(Result.identity_id == identity_id))
            if job_ids:
                s.execute(delete(WebhookDelivery).where(WebhookDelivery.job_id.in_(job_ids)))
            s.execute(delete(Job).where(Job.identity_id == identity_id))
            s.execute(delete(Photo).where(Photo.identity_id == identity_id))
            s.execute(delete(Identity).where(Identity.id == identity_id, Identity.tenant_id == tenant_id))
            # The idempotency records that remember it (its create's answer with its name, its uploads'
            # answers with file names and sizes): gone too, and a retried create makes a new identity.
            # Ids are 128 random bits, so a mention of the id is this identity's record.
            stale = [r.id for r in s.scalars(select(IdempotencyRecord).where(IdempotencyRecord.tenant_id == tenant_id))
                     if identity_id in r.scope or identity_id in json.dumps(r.body)]
            if stale:
                s.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id.in_(stale)))
        for jid in job_ids:
            self.storage.delete_job(tenant_id, jid)
        self.storage.delete_identity(tenant_id, identity_id)
        lease.announce(self.db, job_ids)  # the fleet's streams of these jobs end now, not at their next poll
        log.info("identity deleted", extra={"tenant": tenant_id, "identity": identity_id, "jobs": len(job_ids)})


# An upload is checked in this process, on a request thread: at most DECODE_SLOTS at once decode pixels,
# and only JPEGs (decoded at 1/8 scale from the DCT) or images up to FULL_DECODE_PIXELS do; a larger PNG,
# WebP or TIFF is checked from its header and its own checksums only (a 63 MP PNG would take ~200 MB
# decoded). The worker decodes every photo anyway, and its intake gives any photo it cannot read a verdict.
DECODE_SLOTS = threading.BoundedSemaphore(2)
FULL_DECODE_PIXELS = 12_000_000


def _check_upload(data: bytes, name: str, max_pixels: int, max_bytes: int) -> tuple[int, int, str]:
    """(width, height, format) of an untrusted upload; ImageError when it is no photo."""
    from portrait.imageio import decode_image, probe_image

    probed = probe_image(data, name=name, max_pixels=max_pixels, max_bytes=max_bytes)
    w, h = probed.size
    if probed.format not in ("JPEG", "MPO") and w * h > FULL_DECODE_PIXELS:
        return w, h, probed.format
    with DECODE_SLOTS:
        dec = decode_image(data, name=name, max_side=64, max_pixels=max_pixels, max_bytes=max_bytes)
    return dec.original_size[0], dec.original_size[1], dec.format
