"""Webhooks: a JSON POST when a job ends, signed with HMAC-SHA256, retried with exponential backoff,
every attempt recorded in `webhook_deliveries`.

Headers: `X-Portrait-Event`, `X-Portrait-Delivery` (its id, the same on every retry) and
`X-Portrait-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the tenant's secret>`.
A receiver recomputes the HMAC over the raw body and rejects old timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Optional

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .db import Database
from .db.models import Job, Tenant, WebhookDelivery, now

log = logging.getLogger("portrait.webhooks")
TIMEOUT = 5.0
CLAIM_SECONDS = 60.0  # a delivery being sent is held this long against other workers


def sign(secret: str, body: bytes, timestamp: Optional[int] = None) -> str:
    ts = int(time.time()) if timestamp is None else int(timestamp)
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance: float = 300.0) -> bool:
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        ts = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, ts), header)


def enqueue_for_job(s: Session, job: Job, payload: dict) -> list[str]:
    """Delivery rows for a finished job: its own webhook URL and its tenant's (same transaction)."""
    tenant = s.get(Tenant, job.tenant_id)
    urls = [u for u in dict.fromkeys([job.webhook_url, tenant.webhook_url if tenant else None]) if u]
    event = f"job.{job.state}"
    ids = []
    for url in urls:
        d = WebhookDelivery(tenant_id=job.tenant_id, job_id=job.id, url=url, event=event,
                            payload={"event": event, **payload}, state="pending", attempts=0,
                            next_attempt_at=now())
        s.add(d)
        s.flush()
        ids.append(d.id)
    return ids


def deliver_due(db: Database, *, max_attempts: int, backoff: float, limit: int = 20) -> int:
    """Send the deliveries that are due; returns how many were attempted."""
    t = now()
    with db.session() as s:
        due = s.execute(select(WebhookDelivery.id).where(WebhookDelivery.state == "pending",
                                                         WebhookDelivery.next_attempt_at <= t).limit(limit)).scalars().all()
    sent = 0
    for did in due:
        with db.session(immediate=True) as s:  # claim it: only the worker that moves next_attempt_at sends it
            ok = s.execute(update(WebhookDelivery).where(
                WebhookDelivery.id == did, WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= t)
                .values(next_attempt_at=t + CLAIM_SECONDS).execution_options(synchronize_session=False)).rowcount
            if not ok:
                continue
            d = s.get(WebhookDelivery, did)
            tenant = s.get(Tenant, d.tenant_id)
            url, event, payload, attempts = d.url, d.event, d.payload, d.attempts
            secret = tenant.webhook_secret if tenant else ""
        status, error = _post(url, event, did, payload, secret)
        sent += 1
        with db.session(immediate=True) as s:
            d = s.get(WebhookDelivery, did)
            if d is None:
                continue
            d.attempts = attempts + 1
            d.status_code = status
            d.last_error = error
            if status is not None and 200 <= status < 300:
                d.state, d.delivered_at = "delivered", now()
            elif d.attempts >= max_attempts:
                d.state = "failed"
            else:
                d.next_attempt_at = now() + backoff * (2 ** (d.attempts - 1))
        log.info("webhook", extra={"delivery": did, "status": status, "code": error, "attempt": attempts + 1})
    return sent


def _post(url: str, event: str, delivery_id: str, payload: dict, secret: str) -> tuple[Optional[int], Optional[str]]:
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "portrait-webhooks/1",
        "X-Portrait-Event": event, "X-Portrait-Delivery": delivery_id,
        "X-Portrait-Signature": sign(secret, body)})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {str(exc)[:200]}"
