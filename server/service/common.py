"""What the service's resource modules share: tenant ids, timestamps, cursors and pages, upload names,
webhook URL checks, and the report a job leaves."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from .. import webhooks
from ..errors import BadRequest, NotFound, RejectedUpload, TooLarge


log = logging.getLogger("portrait.server")

KEY_PREFIX = "pk_"
MAX_PAGE = 200
PRIORITY_RANGE = (-10, 10)
BATCH_PRIORITY = -1  # a studio's batch waits behind interactive jobs (priority 0)
MAX_BATCH_ROWS = 500
TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# Options the server sets (paths on its disk, devices, processes, limits), refused from requests.
SERVER_OWNED_OPTIONS = frozenset({"models_dir", "device", "dtype", "reference", "identity", "file_name",
                                  "workers", "max_pixels", "max_bytes", "out", "out_dir"})
FORMAT_EXT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "HEIF": ".heic", "AVIF": ".avif",
               "BMP": ".bmp", "TIFF": ".tif"}


@dataclass(frozen=True)
class TenantInfo:
    id: str
    name: str


# A stored photo's name is `<photo id>.<ext>` (a uuid4 hex), alone or at the end of a server path; its
# training crop is `<rank>_<photo id>.png`.
_STORED = re.compile(r"(?:/[^\s'\"():;,]*/)?(?<![0-9A-Za-z])(?:(\d{1,4})_)?([0-9a-f]{32})(\.[a-z0-9]{1,5})\b")
_ABS_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\"():;,/]+/)*[^\s'\"():;,/]+")


def _upload_name(m: re.Match, names: dict[str, str]) -> str:
    rank, photo_id, ext = m.groups()
    name = names.get(photo_id)
    if name is None:
        return Path(m.group(0)).name
    return f"{rank}_{Path(name).stem}{ext}" if rank else name


def _each_string(value: Any, fn) -> Any:
    """`value` (a string, or a JSON value holding strings) with `fn` applied to every string in it."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_each_string(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _each_string(v, fn) for k, v in value.items()}
    return value


def upload_names(value: Any, names: dict[str, str]) -> Any:
    """`value` (a string, or a JSON value holding strings) with every stored photo name, or a server path
    ending in one, written as the name the photo was uploaded under (`names`: photo id -> filename)."""
    return _each_string(value, lambda text: _STORED.sub(lambda m: _upload_name(m, names), text))


def user_text(value: Any, names: dict[str, str], data_dir: Path, job_dir: Optional[Path] = None) -> Any:
    """A message (or a JSON value of them) as a user may see it: upload names for stored photos, and no
    path of the server's: a job's own files relative to its folder, its report.json as "the job's photo
    report", an identity's photo folder as "your photos", any other path by its last part."""
    roots = [str(Path(data_dir).resolve()), str(Path(data_dir))]
    bases = [] if job_dir is None else [str(Path(job_dir).resolve()), str(job_dir)]

    def one(m: re.Match) -> str:
        path = m.group(0)
        if path.endswith("/report.json"):
            return "the job's photo report"
        for base in bases:
            if path.startswith(base + "/"):
                return path[len(base) + 1:]
        if any(path == r or path.startswith(r + "/") for r in roots):
            return "your photos" if path.rstrip("/").endswith("/photos") else Path(path).name
        return Path(path).name if path.count("/") > 1 else path

    return _each_string(upload_names(value, names), lambda text: _ABS_PATH.sub(one, text))


def tenant_id_of(tenant: "TenantInfo | str") -> str:
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


def page(s: Session, q, model, cursor: Optional[str], limit: int):
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


def find_report(job_dir: Path) -> Optional[Path]:
    for rel in ("report.json", "preprocess/report.json"):
        p = job_dir / rel
        if p.is_file():
            return p
    return None


# Intake refusals that refuse a whole request when every file has one (its error class by reason code).
INTAKE_REFUSALS = {"unreadable": RejectedUpload, "too_large": TooLarge}


def display_name(filename: Optional[str]) -> str:
    """The client's file name for display only: no folders, no control characters, bounded length."""
    name = (filename or "").replace("\\", "/").split("/")[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip().lstrip(".")
    return name[:120] or "upload"


def check_webhook_url(url: str, allow_private: bool = False) -> None:
    why = webhooks.url_refusal(url, allow_private)
    if why:
        raise BadRequest(why, code="bad_webhook_url", details={"field": "webhook_url"})


def owned_row(s: Session, model, tenant_id: str, row_id: Any, what: str):
    """The tenant's row of `model` with this id; NotFound (`<what>_not_found`) for a missing id and for
    another tenant's alike, so no id ever tells one tenant of another's rows."""
    row = s.get(model, row_id) if isinstance(row_id, str) else None
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"no {what} {str(row_id)[:64]!r}", code=f"{what}_not_found")
    return row


def by_idempotency_key(s: Session, model, tenant_id: str, key: Optional[str]):
    """The tenant's job or batch submitted earlier with this Idempotency-Key, or None."""
    if not key:
        return None
    return s.scalars(select(model).where(model.tenant_id == tenant_id, model.idempotency_key == key)).first()
