"""Where the service's files live. Every name is made by the server (ids), never taken from an upload.

Layout (under the data dir for local storage, under `PREFIX/` of the bucket for an object store):
    tenants/<tenant>/identities/<identity>/photos/<photo id>.<ext>   accepted uploads
    tenants/<tenant>/jobs/<job>/                                     a job's out_dir (crops, identity files, results)

The job layer writes to local folders, so a worker always works on a local path.
- `LocalStorage` (PORTRAIT_STORAGE_URL unset) hands out folders in the data dir itself: one machine, or
  a fleet sharing the data dir over the network.
- `S3Storage` (PORTRAIT_STORAGE_URL=s3://BUCKET/PREFIX) keeps the files in an object store, so a fleet
  shares nothing but the database, the broker and the bucket. Each machine keeps a local cache in
  `<data_dir>/cache/` with the same layout: `photos_dir` and `job_dir(create=False)` sync an
  identity's photos / a finished job's folder down into it (only what changed), `open_result` fetches
  one file, `job_dir(create=True)` is an empty scratch folder for a job about to run and
  `publish_job` (called by the worker when the job ends, whatever its state) uploads that folder and
  removes objects an earlier attempt left. Deleting removes the objects and this machine's cached copies.
"""
from __future__ import annotations

from pathlib import Path

from .base import Storage, parse_storage_url
from .local import LocalStorage
from .s3 import S3Storage, prune_cache

__all__ = ["LocalStorage", "S3Storage", "Storage", "make_storage", "parse_storage_url", "prune_cache"]

def make_storage(data_dir: str | Path, url: str = "", endpoint_url: str = "", cache_hours: float = 24.0) -> Storage:
    """`url` "": files in the data dir; `s3://BUCKET/PREFIX`: an object store cached in `<data_dir>/cache`
    (folders unused for `cache_hours` dropped)."""
    if not url:
        return LocalStorage(data_dir)
    bucket, prefix = parse_storage_url(url)
    return S3Storage(bucket, prefix, Path(data_dir) / "cache", endpoint_url=endpoint_url, cache_hours=cache_hours)
