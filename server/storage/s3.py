"""`S3Storage`: the files in an object store, each machine keeping a local cache of what it used."""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import BadSettings, StorageUnavailable
from .base import EXT_PATTERN, Storage, check_id, check_relpath, log, replace_atomically

_LISTING = ".listing.json"  # a cached job folder's sidecar (beside the folder, never inside it)
_TRANSFERS = 8  # files moved at once
PRUNE_EVERY_SECONDS = 600.0  # how often a process looks for cache entries to drop


class S3Storage(Storage):
    """The files in an S3 bucket (or an S3-compatible store) under `prefix`, cached under `cache_dir`.

    `client`: a boto3 S3 client; None = built from boto3's usual sources (environment, shared
    config and credentials files, instance roles) and `endpoint_url`."""

    def __init__(self, bucket: str, prefix: str, cache_dir: str | Path, *, endpoint_url: str = "",
                 client: Any = None, check: bool = True, cache_hours: float = 24.0):
        self.cache_hours = float(cache_hours)  # a cached photo folder or job folder unused this long is dropped
        self._pinned: set[str] = set()  # jobs this process is writing (never pruned)
        self._last_prune = time.monotonic()
        self._prune_lock = threading.Lock()
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache = Path(cache_dir).resolve()
        self.cache.mkdir(parents=True, exist_ok=True)
        self._tmp = self.cache / ".partial"  # downloads in progress
        if client is None:
            import boto3

            client = boto3.session.Session().client("s3", endpoint_url=endpoint_url or None)
        self.client = client
        if check:
            self._check_bucket()

    def _check_bucket(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            status = exc.response.get("Error", {}).get("Code", "")
            why = {"404": "does not exist", "NoSuchBucket": "does not exist",
                   "403": "is not accessible with these credentials"}.get(status, f"answered {status or exc}")
            raise BadSettings(f"PORTRAIT_STORAGE_URL: bucket {self.bucket!r} {why}") from exc
        except BotoCoreError as exc:  # no credentials, endpoint unreachable, bad region...
            raise BadSettings(f"PORTRAIT_STORAGE_URL: cannot reach bucket {self.bucket!r}: {exc} "
                              "(credentials come from boto3's usual sources; PORTRAIT_STORAGE_ENDPOINT_URL "
                              "for an S3-compatible store)") from exc

    def _maybe_prune(self) -> None:
        """prune_cache at most every PRUNE_EVERY_SECONDS, by whichever call comes first."""
        if time.monotonic() - self._last_prune < PRUNE_EVERY_SECONDS or not self._prune_lock.acquire(blocking=False):
            return
        try:
            self._last_prune = time.monotonic()
            prune_cache(self)
        finally:
            self._prune_lock.release()

    # -- keys and cache paths ----------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return "/".join(([self.prefix] if self.prefix else []) + list(parts))

    @staticmethod
    def _tenant_parts(tenant: str) -> list[str]:
        return ["tenants", check_id(tenant, "tenant")]

    def _identity_parts(self, tenant: str, identity: str) -> list[str]:
        return self._tenant_parts(tenant) + ["identities", check_id(identity, "identity")]

    def _job_parts(self, tenant: str, job: str) -> list[str]:
        return self._tenant_parts(tenant) + ["jobs", check_id(job, "job")]

    def _local(self, parts: list[str]) -> Path:
        return self.cache.joinpath(*parts)

    # -- object store primitives -------------------------------------------------------------------
    def _list(self, prefix: str) -> dict[str, tuple[str, int]]:
        """Every object under `prefix` (all pages): key -> (etag, size)."""
        out: dict[str, tuple[str, int]] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents") or []:
                out[obj["Key"]] = (str(obj.get("ETag", "")), int(obj.get("Size", 0)))
        return out

    def _delete_prefix(self, prefix: str) -> int:
        keys = sorted(self._list(prefix))
        self._delete_keys(keys)
        return len(keys)

    def _delete_keys(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):  # the most one DeleteObjects request takes
            answer = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
            errors = answer.get("Errors") or []
            if errors:
                raise OSError(f"object store refused to delete {len(errors)} object(s), e.g. {errors[0]}")

    def _download(self, key: str, target: Path) -> bool:
        """The object into `target` (atomically); False if there is no such object."""
        from botocore.exceptions import ClientError

        try:
            replace_atomically(target, lambda fh: self.client.download_fileobj(self.bucket, key, fh), self._tmp)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def _each(self, fn, items) -> None:
        items = list(items)
        if len(items) <= 1:
            for item in items:
                fn(item)
            return
        with ThreadPoolExecutor(min(_TRANSFERS, len(items))) as pool:
            for _ in pool.map(fn, items):  # re-raises the first failure
                pass

    def _sync_down(self, prefix: str, local: Path, *, changed, remote: dict | None = None) -> Path:
        """Make `local` hold exactly the objects under `prefix/` (downloading only what `changed`
        says is new or different; removing local files the store no longer has). `remote`: the
        caller's listing of `prefix/`, when it has one."""
        remote = self._list(prefix + "/") if remote is None else remote
        wanted = {k[len(prefix) + 1:]: v for k, v in remote.items()}
        local.mkdir(parents=True, exist_ok=True)
        for p in [p for p in local.rglob("*") if p.is_file() or p.is_symlink()]:
            if p.relative_to(local).as_posix() not in wanted:
                p.unlink(missing_ok=True)
        todo = [rel for rel, v in wanted.items() if changed(rel, v, local / rel)]
        self._each(lambda rel: self._download(f"{prefix}/{rel}", local / rel), todo)
        return local

    # -- photos ------------------------------------------------------------------------------------
    def put_photo(self, tenant: str, identity: str, photo: str, ext: str, data: bytes) -> str:
        if not EXT_PATTERN.match(ext):
            raise ValueError(f"invalid extension {ext!r}")
        name = check_id(photo, "photo") + ext
        key = self._key(*self._identity_parts(tenant, identity), "photos", name)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return name

    def photos_dir(self, tenant: str, identity: str) -> Path:
        self._maybe_prune()
        parts = self._identity_parts(tenant, identity) + ["photos"]
        # a photo's bytes never change under its id: a cached file of the right size is current
        local = self._sync_down(self._key(*parts), self._local(parts),
                                changed=lambda rel, v, path: not path.is_file() or path.stat().st_size != v[1])
        _touch_tree(local)  # in use now: not pruned for cache_hours
        return local

    def delete_photo(self, tenant: str, identity: str, stored_name: str) -> None:
        name = Path(stored_name).name
        parts = self._identity_parts(tenant, identity) + ["photos"]
        if not name or name in (".", ".."):
            return
        self._delete_keys([self._key(*parts, name)])
        (self._local(parts) / name).unlink(missing_ok=True)

    def delete_identity(self, tenant: str, identity: str) -> None:
        parts = self._identity_parts(tenant, identity)
        self._delete_prefix(self._key(*parts) + "/")
        shutil.rmtree(self._local(parts), ignore_errors=True)

    # -- jobs --------------------------------------------------------------------------------------
    def _listing_path(self, parts: list[str]) -> Path:
        return self._local(parts[:-1]) / f"{parts[-1]}{_LISTING}"

    def job_dir(self, tenant: str, job: str, create: bool = True) -> Path:
        """create=True: an empty local folder for the job about to run (any cached copy is dropped);
        create=False: the published folder, synced down into the cache (as it is locally if nothing
        is published yet)."""
        self._maybe_prune()
        parts = self._job_parts(tenant, job)
        local = self._local(parts)
        listing_path = self._listing_path(parts)
        if create:
            self._pinned.add(job)
            shutil.rmtree(local, ignore_errors=True)
            listing_path.unlink(missing_ok=True)
            local.mkdir(parents=True, exist_ok=True)
            return local
        prefix = self._key(*parts)
        remote = self._list(prefix + "/")
        if not remote:
            return local  # not published (yet): whatever this machine has
        try:
            known = json.loads(listing_path.read_text())
        except (OSError, ValueError):
            known = {}
        local = self._sync_down(prefix, local, changed=lambda rel, v, path: not path.is_file()
                                or known.get(rel) != v[0] or path.stat().st_size != v[1], remote=remote)
        self._write_listing(parts, remote)
        _touch_tree(local)
        return local

    def _write_listing(self, parts: list[str], remote: dict[str, tuple[str, int]]) -> None:
        """Record the etags of the job's objects (`remote`: its listing) beside the cached folder."""
        prefix = self._key(*parts) + "/"
        etags = {k[len(prefix):]: v[0] for k, v in remote.items()}
        target = self._listing_path(parts)
        replace_atomically(target, lambda fh: fh.write(json.dumps(etags).encode()), self._tmp)

    def publish_job(self, tenant: str, job: str) -> None:
        """Upload the job's local folder; objects of the job the folder no longer has are removed."""
        parts = self._job_parts(tenant, job)
        local = self._local(parts)
        prefix = self._key(*parts)
        files = {p.relative_to(local).as_posix(): p for p in local.rglob("*") if p.is_file() and not p.is_symlink()} \
            if local.is_dir() else {}
        self._each(lambda rel: self.client.upload_file(str(files[rel]), self.bucket, f"{prefix}/{rel}"), sorted(files))
        remote = self._list(prefix + "/")
        kept = {k: v for k, v in remote.items() if k[len(prefix) + 1:] in files}
        self._delete_keys(sorted(remote.keys() - kept.keys()))  # objects the folder no longer has
        self._write_listing(parts, kept)
        self._pinned.discard(job)
        log.info("job published", extra={"job": job, "tenant": tenant, "files": len(files)})

    def delete_job(self, tenant: str, job: str) -> None:
        parts = self._job_parts(tenant, job)
        self._delete_prefix(self._key(*parts) + "/")
        shutil.rmtree(self._local(parts), ignore_errors=True)
        self._listing_path(parts).unlink(missing_ok=True)

    def delete_tenant(self, tenant: str) -> None:
        parts = self._tenant_parts(tenant)
        self._delete_prefix(self._key(*parts) + "/")
        shutil.rmtree(self._local(parts), ignore_errors=True)

    def cached(self) -> list[tuple[str, str, str, Path]]:
        return [(kind, folder.parent.parent.name, folder.name, folder)
                for kind in ("identities", "jobs") for folder in self.cache.glob(f"tenants/*/{kind}/*")
                if folder.is_dir() and not (kind == "jobs" and folder.name in self._pinned)]

    def drop_cached(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        (folder.parent / f"{folder.name}{_LISTING}").unlink(missing_ok=True)

    def open_result(self, tenant: str, job: str, relpath: str) -> Path:
        self._maybe_prune()
        parts = self._job_parts(tenant, job)
        rel = check_relpath(relpath)
        base = self._local(parts).resolve()
        path = (base / rel).resolve()
        if base not in path.parents:
            raise FileNotFoundError(relpath)
        if path.is_file():  # a finished job's files never change: a cached copy is current
            os.utime(path)  # being served: not pruned for cache_hours
            return path
        if not self._download(f"{self._key(*parts)}/{rel}", path):
            raise FileNotFoundError(relpath)
        return path


def _touch_tree(folder: Path) -> None:
    """Mark a cached folder as used now (its files' and its own mtime), so pruning keeps it."""
    for p in [folder, *folder.rglob("*")]:
        try:
            os.utime(p)
        except OSError:
            pass


def _newest_mtime(folder: Path) -> float:
    newest = 0.0
    for p in [folder, *folder.rglob("*")]:
        try:
            newest = max(newest, p.stat().st_mtime)
        except OSError:
            pass
    return newest


def prune_cache(storage: "S3Storage", at: float | None = None) -> int:
    """Drop cached identity and job folders (and stale partial downloads) of `storage` unused for its
    `cache_hours`, except the jobs this process is writing; returns how many folders went. The bucket keeps
    everything: a dropped folder is downloaded again when next needed."""
    cutoff = (time.time() if at is None else at) - storage.cache_hours * 3600.0
    gone = 0
    for _kind, _tenant, _id, folder in storage.cached():
        if _newest_mtime(folder) < cutoff:
            storage.drop_cached(folder)
            gone += 1
    for part in storage._tmp.glob("*") if storage._tmp.is_dir() else []:
        try:
            if part.stat().st_mtime < cutoff:
                part.unlink()
        except OSError:
            pass
    if gone:
        log.info("cache pruned", extra={"deleted": gone})
    return gone


def _store_errors(method):
    """An S3Storage method whose object-store failures (network, credentials, a lost bucket) are a typed
    StorageUnavailable (503 `storage_unavailable` in the API), never a bare 500."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return method(self, *args, **kwargs)
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise StorageUnavailable(f"the file store is unavailable ({type(exc).__name__}); please try again "
                                     "later") from exc

    return wrapper


for _name in ("put_photo", "photos_dir", "delete_photo", "delete_identity", "job_dir", "publish_job", "delete_job",
              "delete_tenant", "open_result"):
    setattr(S3Storage, _name, _store_errors(getattr(S3Storage, _name)))
