"""The database: engine, sessions and migrations (Alembic, shipped inside the package).

SQLite (the default, one file in the data dir) runs in WAL mode with a busy timeout; transactions
begin DEFERRED, and `session(immediate=True)` begins `BEGIN IMMEDIATE` (the queue's claims and the
migrations), which takes the write lock up front so two claimers never both read the same free job.
PostgreSQL is used through psycopg 3 (`postgresql://` URLs get the `+psycopg` driver).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from .models import Base  # noqa: F401  (re-exported for migrations and tests)

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 74_201_010  # advisory lock id held while migrating


def normalise_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False},
                               pool_size=20, max_overflow=20)
        _sqlite_events(engine)
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (pysqlite's own is unreliable)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")


class Database:
    """One engine and its sessions. `session()` commits on success and rolls back on error."""

    def __init__(self, url: str):
        self.url = normalise_url(url)
        self.engine = make_engine(self.url)
        self.dialect = self.engine.dialect.name  # "sqlite" | "postgresql"
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._migrated = False
        self._lock = threading.Lock()
        self.news = None  # server.job_news.JobNews in a fleet: lease writes announce the jobs they change

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def session(self, immediate: bool = False) -> Iterator[Session]:
        """A session committed when the block ends, rolled back when it raises. `immediate` (SQLite):
        the write lock is taken at BEGIN, so two claimers never both read the same free job."""
        if immediate:
            with self.engine.connect() as conn:
                conn.execution_options(immediate=True)
                with Session(bind=conn, expire_on_commit=False, join_transaction_mode="rollback_only") as s:
                    yield from _committed(s)
                conn.commit()
            return
        with self._sessions() as s:
            yield from _committed(s)

    def migrate(self) -> str:
        """Apply every migration (idempotent, safe when several processes start at once); the head revision."""
        with self._lock:
            from alembic import command
            from alembic.config import Config

            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            with self.engine.connect() as conn:
                if self.is_sqlite:
                    conn.execution_options(immediate=True)
                with conn.begin():
                    if not self.is_sqlite:
                        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
            self._migrated = True
            return self.revision()

    def revision(self) -> str | None:
        with self.engine.connect() as conn:
            try:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except Exception:
                return None

    def dispose(self) -> None:
        self.engine.dispose()


def _committed(s: Session) -> Iterator[Session]:
    """Yield `s`; commit after the caller's block, or roll back and re-raise when it fails."""
    try:
        yield s
        s.commit()
    except BaseException:
        s.rollback()
        raise
