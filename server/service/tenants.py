"""Service methods for tenants and their API keys."""

from __future__ import annotations

import secrets
from typing import Any, Optional

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..db.models import VISITOR_PREFIX, ApiKey, Tenant, is_visitor_name, new_id, now
from ..errors import BadRequest, Conflict, NotFound, Unauthorized
from .common import KEY_PREFIX, TenantInfo, check_webhook_url, hash_key, iso, tenant_id_of


class TenantsService:
    """Tenants and their API keys.

    One part of `Service`: it uses the service's settings, db, storage and dispatcher, and the other
    parts' methods, through self."""

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
            check_webhook_url(webhook_url, self.settings.webhook_allow_private)
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
            self._tenant_row(s, tenant_id_of(tenant))
            return self._new_key(s, tenant_id_of(tenant))

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
            check_webhook_url(fields["webhook_url"], self.settings.webhook_allow_private)
        with self.db.session(immediate=True) as s:
            t = self._tenant_row(s, tenant_id_of(tenant))
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
            return self._tenant_row(s, tenant_id_of(tenant)).webhook_secret
