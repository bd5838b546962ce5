"""`LocalStorage`: the files in the data dir itself (one machine, or a fleet sharing it over the network)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .base import EXT_PATTERN, Storage, check_id, replace_atomically


class LocalStorage(Storage):
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def tenant_dir(self, tenant: str) -> Path:
        return self.root / "tenants" / check_id(tenant, "tenant")

    def identity_dir(self, tenant: str, identity: str) -> Path:
        return self.tenant_dir(tenant) / "identities" / check_id(identity, "identity")

    def photos_dir(self, tenant: str, identity: str) -> Path:
        d = self.identity_dir(tenant, identity) / "photos"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def put_photo(self, tenant: str, identity: str, photo: str, ext: str, data: bytes) -> str:
        if not EXT_PATTERN.match(ext):
            raise ValueError(f"invalid extension {ext!r}")
        name = check_id(photo, "photo") + ext
        d = self.photos_dir(tenant, identity)
        replace_atomically(d / name, lambda fh: fh.write(data), d, prefix=".upload-")  # a job never sees half a photo
        return name

    def photo_path(self, tenant: str, identity: str, stored_name: str) -> Path:
        return self.photos_dir(tenant, identity) / Path(stored_name).name

    def delete_photo(self, tenant: str, identity: str, stored_name: str) -> None:
        (self.identity_dir(tenant, identity) / "photos" / Path(stored_name).name).unlink(missing_ok=True)

    def job_dir(self, tenant: str, job: str, create: bool = True) -> Path:
        d = self.tenant_dir(tenant) / "jobs" / check_id(job, "job")
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
