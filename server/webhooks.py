"""Webhooks: a JSON POST when a job ends, signed with HMAC-SHA256, retried with exponential backoff,
every attempt recorded in `webhook_deliveries`.

Headers: `X-Portrait-Event`, `X-Portrait-Delivery` (its id, the same on every retry) and
`X-Portrait-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the tenant's secret>`.
A receiver recomputes the HMAC over the raw body and rejects old timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import time
from typing import Optional
from urllib.parse import urlsplit

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


def deliver_due(db: Database, *, max_attempts: int, backoff: float, limit: int = 20,
                allow_private: bool = False) -> int:
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
        status, error = _post(url, event, did, payload, secret, allow_private)
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


class AddressRefused(ValueError):
    """A webhook URL whose host is (or resolves to) an address inside the server's own networks."""


NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known NAT64 prefix: an IPv4 address in its last 32 bits


def _embedded_ipv4(addr) -> Optional[ipaddress.IPv4Address]:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, Teredo's client), or None."""
    if addr.version != 6:
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    return None


def _address_refusal(host: str, ip: str) -> Optional[str]:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    inner = _embedded_ipv4(addr)
    # Python counts some multicast ranges as global (224.0.0.1, ff02::1): refused here all the same, and
    # an address that wraps a private IPv4 one is that private address.
    if addr.is_global and not addr.is_multicast and (inner is None or (inner.is_global and not inner.is_multicast)):
        return None
    if inner is not None:
        addr = inner
    return (f"webhook host {host} is {addr}, a private, loopback, multicast or reserved address: webhooks go to public "
            "hosts only (PORTRAIT_WEBHOOK_ALLOW_PRIVATE=1 allows private ones, for a receiver on your own network)")


def url_refusal(url: str, allow_private: bool) -> Optional[str]:
    """Why a webhook URL is refused when it is given (not http(s), too long, `localhost`, a private IP
    literal), or None. Names are checked again, resolved, at every delivery (an address can change)."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.netloc or len(url) > 2000:
        return f"webhook URL must be an http(s) URL, got {url[:100]!r}"
    host = (u.hostname or "").rstrip(".").lower()
    if allow_private:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return f"webhook host {host} is this machine: webhooks go to public hosts only"
    try:
        return _address_refusal(host, host)
    except ValueError:
        return None  # a name: resolved at delivery


def vetted_address(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to for `host`: every address it resolves to must be public (unless
    `allow_private`), and the connection goes to the address checked, never to a second lookup."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise AddressRefused(f"webhook host {host} does not resolve")
    addresses = [info[4][0] for info in infos]
    if not allow_private:
        for ip in addresses:
            why = _address_refusal(host, ip)
            if why:
                raise AddressRefused(why)
    return addresses[0]


class _HTTPTo(http.client.HTTPConnection):
    """HTTP to a vetted address; the Host header keeps the URL's name."""

    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _HTTPSTo(http.client.HTTPSConnection):
    """HTTPS to a vetted address; the certificate is checked against the URL's name (SNI too)."""

    def __init__(self, host: str, address: str, port: int, timeout: float):
        self._ctx = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._ctx)
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


def _post(url: str, event: str, delivery_id: str, payload: dict, secret: str,
          allow_private: bool = False) -> tuple[Optional[int], Optional[str]]:
    """POST the signed payload; (HTTP status or None, error or None). Redirects are not followed (a 3xx is
    a failed attempt): a public receiver must not be able to point the server at its own network."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "portrait-webhooks/1",
               "X-Portrait-Event": event, "X-Portrait-Delivery": delivery_id,
               "X-Portrait-Signature": sign(secret, body)}
    u = urlsplit(url)
    https = u.scheme == "https"
    try:
        host, port = u.hostname or "", u.port or (443 if https else 80)
        address = vetted_address(host, port, allow_private)
        conn = (_HTTPSTo if https else _HTTPTo)(host, address, port, TIMEOUT)
        try:
            conn.request("POST", (u.path or "/") + (f"?{u.query}" if u.query else ""), body=body, headers=headers)
            status = conn.getresponse().status
        finally:
            conn.close()
    except AddressRefused as exc:
        return None, str(exc)[:300]
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {str(exc)[:200]}"
    if 200 <= status < 300:
        return status, None
    return status, f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
