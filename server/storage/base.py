"""The storage contract every backend keeps, and the id, path and atomic-write rules they share."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

from ..errors import BadSettings


log = logging.getLogger("portrait.storage")

ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
EXT_PATTERN = re.compile(r"^\.[a-z0-9]{1,5}$")



def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise ValueError(f"invalid {what} id {value!r}")  # ids come from our database: a bug otherwise
    return value


class Storage(ABC):
    """The files of tenants, identities and jobs."""

    @abstractmethod
    def put_photo(self, tenant: str, identity: str, photo: str, ext: str, data: bytes) -> str:
        """Store an accepted upload; returns its stored name."""

    @abstractmethod
    def photos_dir(self, tenant: str, identity: str) -> Path:
        """A local folder holding exactly the identity's accepted photos (the job layer's input)."""

    @abstractmethod
    def job_dir(self, tenant: str, job: str, create: bool = True) -> Path:
        """The local out_dir of a job."""

    @abstractmethod
    def delete_photo(self, tenant: str, identity: str, stored_name: str) -> None: ...

    @abstractmethod
    def delete_identity(self, tenant: str, identity: str) -> None: ...

    @abstractmethod
    def delete_job(self, tenant: str, job: str) -> None: ...

    @abstractmethod
    def delete_tenant(self, tenant: str) -> None: ...

    @abstractmethod
    def open_result(self, tenant: str, job: str, relpath: str) -> Path:
        """A local path to a file a job wrote, checked to be inside that job's folder."""

    def cached(self) -> list[tuple[str, str, str, Path]]:
        """(kind "identities" | "jobs", tenant, id, folder) of every local cached copy of a store kept
        elsewhere; [] where the files live only here (the local data dir is the store itself)."""
        return []

    def drop_cached(self, folder: Path) -> None:
        """Forget one cached copy (its store keeps it, or has deleted it already)."""

    def publish_job(self, tenant: str, job: str) -> None:
        """Make a job's folder, as the worker left it when the job ended, visible to every machine
        (a no-op where the folder already is the shared copy)."""



BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_storage_url(url: str) -> tuple[str, str]:
    """`s3://BUCKET/PREFIX` -> (bucket, prefix without slashes at either end; may be "")."""
    where = "PORTRAIT_STORAGE_URL"
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise BadSettings(f"{where} must be empty (files in the data dir) or s3://BUCKET/PREFIX, got {url!r}")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not BUCKET_PATTERN.match(bucket) or ".." in bucket:
        raise BadSettings(f"{where}: {bucket!r} is not a valid bucket name (3-63 characters: a-z, 0-9, '.', '-')")
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") or "\\" in part or not part.isprintable() for part in prefix.split("/")):
        raise BadSettings(f"{where}: the prefix {prefix!r} must be plain names separated by '/' (no '.', '..' or '//')")
    return bucket, prefix


def check_relpath(relpath: str) -> str:
    """A path inside a job's folder: relative, '/'-separated, no '.', '..' or empty parts."""
    if not isinstance(relpath, str) or not relpath or relpath.startswith("/") or "\\" in relpath or "\0" in relpath:
        raise FileNotFoundError(relpath)
    if any(part in ("", ".", "..") for part in relpath.split("/")):
        raise FileNotFoundError(relpath)
    return relpath


def replace_atomically(target: Path, write, tmp_dir: Path, prefix: str = "download-") -> None:
    """`write(open binary file)` into a temporary file in `tmp_dir` (same file system; outside every
    folder a job reads, or hidden there by `prefix`), then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, target)  # a reader never sees half a file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
