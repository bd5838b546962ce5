"""The service's tables (SQLAlchemy 2). Ids are random (uuid4 hex), never sequential; times are
UTC epoch seconds (float), compared the same way on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Optional

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


def new_id() -> str:
    return uuid.uuid4().hex


def now() -> float:
    return time.time()


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


VISITOR_PREFIX = "web-"  # a web form visitor's own tenant: VISITOR_PREFIX + 16 hex digits
_VISITOR_NAME = re.compile(r"web-[0-9a-f]{16}")


def is_visitor_name(name: str) -> bool:
    """A web form visitor's tenant name (a name API tenants may not take; retention prunes such tenants)."""
    return bool(_VISITOR_NAME.fullmatch(name or ""))


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    retention_days: Mapped[Optional[float]] = mapped_column(Float)  # None = the server's default
    concurrency: Mapped[Optional[int]] = mapped_column(Integer)  # None = the server's default
    webhook_url: Mapped[Optional[str]] = mapped_column(Text)  # tenant-wide webhook
    webhook_secret: Mapped[str] = mapped_column(String(64))  # signs every webhook of this tenant


class ApiKey(Base):
    """Only the key's sha256 is stored; the key itself is shown once, when created."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters, to tell keys apart
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    last_used_at: Mapped[Optional[float]] = mapped_column(Float)
    revoked_at: Mapped[Optional[float]] = mapped_column(Float)


class Identity(Base):
    __tablename__ = "identities"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)
    reference_photo_id: Mapped[Optional[str]] = mapped_column(String(32))  # set by a preprocess/run job


class Photo(Base):
    """An uploaded photo and its verdict. Rejected uploads keep their row (the verdict) but no file."""

    __tablename__ = "photos"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    identity_id: Mapped[str] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))  # the client's name, for display only
    stored_name: Mapped[Optional[str]] = mapped_column(String(64))  # the server's file name (None if rejected)
    bytes: Mapped[int] = mapped_column(Integer, default=0)
    width: Mapped[Optional[int]] = mapped_column(Integer)
    height: Mapped[Optional[int]] = mapped_column(Integer)
    format: Mapped[Optional[str]] = mapped_column(String(16))
    sha256: Mapped[Optional[str]] = mapped_column(String(64))
    accepted: Mapped[bool] = mapped_column(Boolean, default=True)
    reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)  # report.json reason codes
    message: Mapped[str] = mapped_column(Text, default="")
    is_reference: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Batch(Base):
    __tablename__ = "batches"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[float] = mapped_column(Float, default=now)
    idempotency_key: Mapped[Optional[str]] = mapped_column(String(200))
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key", name="uq_batches_idempotency"),)


class Job(Base):
    """One job; this row is the truth whichever dispatcher (embedded lease queue or Celery) runs it."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    identity_id: Mapped[Optional[str]] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), index=True)
    batch_id: Mapped[Optional[str]] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="queued")
    stage: Mapped[str] = mapped_column(String(64), default="")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    priority: Mapped[int] = mapped_column(Integer, default=0)  # higher runs first
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_until: Mapped[Optional[float]] = mapped_column(Float)
    heartbeat_at: Mapped[Optional[float]] = mapped_column(Float)
    worker: Mapped[Optional[str]] = mapped_column(String(200))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    templates: Mapped[list[Any]] = mapped_column(JSON, default=list)
    styles: Mapped[Optional[list[Any]]] = mapped_column(JSON, default=list)  # create jobs' style packs
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)  # the job layer's Result.to_dict()
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # stage -> seconds
    error_code: Mapped[Optional[str]] = mapped_column(String(64))
    error_message: Mapped[Optional[str]] = mapped_column(Text)
    error_details: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    idempotency_key: Mapped[Optional[str]] = mapped_column(String(200))
    webhook_url: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    started_at: Mapped[Optional[float]] = mapped_column(Float)
    finished_at: Mapped[Optional[float]] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float, default=now)
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_idempotency"),
        Index("ix_jobs_queue", "state", "priority", "created_at"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at"),
    )

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class Result(Base):
    """One output image of a job."""

    __tablename__ = "results"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    identity_id: Mapped[Optional[str]] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), index=True)
    template: Mapped[str] = mapped_column(String(200), default="")
    path: Mapped[str] = mapped_column(Text)  # relative to the job's folder, written by the job layer
    score: Mapped[Optional[float]] = mapped_column(Float)  # 0..1 similarity to the user
    distance: Mapped[Optional[float]] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[Optional[str]] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float, default=now)
    status_code: Mapped[Optional[int]] = mapped_column(Integer)
    last_error: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    delivered_at: Mapped[Optional[float]] = mapped_column(Float)
    __table_args__ = (Index("ix_webhooks_due", "state", "next_attempt_at"),)


class IdempotencyRecord(Base):
    """The response first given to a POST with an `Idempotency-Key`, replayed on a retry."""

    __tablename__ = "idempotency"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(200))  # method and route, e.g. "POST /identities"
    status: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    fingerprint: Mapped[Optional[str]] = mapped_column(String(64))  # sha256 of what was asked (a reuse with
    #                                                                  another request is refused)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    __table_args__ = (UniqueConstraint("tenant_id", "scope", "key", name="uq_idempotency"),)


class WorkerRow(Base):
    """A live (or recently live) worker process, for /metrics and /readyz."""

    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid:random
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(32), default="cpu")
    mode: Mapped[str] = mapped_column(String(16), default="embedded")  # embedded | celery
    started_at: Mapped[float] = mapped_column(Float, default=now)
    heartbeat_at: Mapped[float] = mapped_column(Float, default=now)
    job_id: Mapped[Optional[str]] = mapped_column(String(32))
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
