"""Where the service's files live. Every name is made by the server (ids), never taken from an upload.

Layout under the data dir (local storage):
    tenants/<tenant>/identities/<identity>/photos/<photo id>.<ext>   accepted uploads
    tenants/<tenant>/jobs/<job>/                                     a job's out_dir (crops, identity files, results)

The job layer writes to local folders, so a worker always works on a local path: `LocalStorage`
hands out folders in the data dir itself. An object store (S3) would implement the same interface
by syncing a job's inputs down before it runs and its folder up after (see `Storage`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

_ID = re.compile(r"^[0-9a-f]{32}$")
_EXT = re.compile(r"^\.[a-z0-9]{1,5}$")


def _check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
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


class LocalStorage(Storage):
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def tenant_dir(self, tenant: str) -> Path:
        return self.root / "tenants" / _check_id(tenant, "tenant")

    def identity_dir(self, tenant: str, identity: str) -> Path:
        return self.tenant_dir(tenant) / "identities" / _check_id(identity, "identity")

    def photos_dir(self, tenant: str, identity: str) -> Path:
        d = self.identity_dir(tenant, identity) / "photos"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def put_photo(self, tenant: str, identity: str, photo: str, ext: str, data: bytes) -> str:
        if not _EXT.match(ext):
            raise ValueError(f"invalid extension {ext!r}")
        name = _check_id(photo, "photo") + ext
        d = self.photos_dir(tenant, identity)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, d / name)  # atomic: a job never sees half a photo
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return name

    def photo_path(self, tenant: str, identity: str, stored_name: str) -> Path:
        return self.photos_dir(tenant, identity) / Path(stored_name).name

    def delete_photo(self, tenant: str, identity: str, stored_name: str) -> None:
        (self.identity_dir(tenant, identity) / "photos" / Path(stored_name).name).unlink(missing_ok=True)

    def job_dir(self, tenant: str, job: str, create: bool = True) -> Path:
        d = self.tenant_dir(tenant) / "jobs" / _check_id(job, "job")
        if create:
            d.mkdir(parents=True, exist_ok=True)
        return d

    def delete_identity(self, tenant: str, identity: str) -> None:
        shutil.rmtree(self.identity_dir(tenant, identity), ignore_errors=True)

    def delete_job(self, tenant: str, job: str) -> None:
        shutil.rmtree(self.job_dir(tenant, job, create=False), ignore_errors=True)

    def delete_tenant(self, tenant: str) -> None:
        shutil.rmtree(self.tenant_dir(tenant), ignore_errors=True)

    def open_result(self, tenant: str, job: str, relpath: str) -> Path:
        base = self.job_dir(tenant, job, create=False).resolve()
        path = (base / relpath).resolve()
        if base not in path.parents or not path.is_file():
            raise FileNotFoundError(relpath)
        return path


def make_storage(data_dir: str | Path) -> Storage:
    return LocalStorage(data_dir)
