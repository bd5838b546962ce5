"""The object-store backend (PORTRAIT_STORAGE_URL=s3://BUCKET/PREFIX) against a real local server
speaking the S3 protocol (moto's standalone server on a loopback socket): the Storage contract, a
job folder published by one machine and read by another with an empty cache, confinement, id
checks, deletion of every object, and the service end to end with a worker that shares nothing
with the web side but the database and the bucket."""

from __future__ import annotations

import io
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from server.db.models import new_id
from server.errors import BadSettings, StorageUnavailable, error_response
from server.settings import Settings
from server.storage import S3Storage, make_storage

from helpers_service import s3_environment, s3_server


@pytest.fixture(scope="module")
def endpoint():
    with s3_server() as url:
        yield url


@pytest.fixture
def bucket(endpoint, monkeypatch, tmp_path):
    """A new, empty bucket on the server, boto3 configured through the environment only."""
    import boto3

    s3_environment(monkeypatch, tmp_path)
    name = f"portrait-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


def keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    import boto3

    out = []
    for page in boto3.client("s3", endpoint_url=endpoint).get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents") or []]
    return sorted(out)


def s3(endpoint: str, bucket: str, cache: Path) -> S3Storage:
    return make_storage(cache.parent, f"s3://{bucket}/some/prefix/", endpoint)  # type: ignore[return-value]


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_bad_storage_settings_are_named(endpoint, bucket, tmp_path):
    for url, words in [("http://bucket/x", "s3://BUCKET/PREFIX"), ("s3://", "bucket name"),
                       ("s3://Bad_Bucket/x", "bucket name"), ("s3://bucket/a/../b", "prefix"),
                       ("s3://bucket/a//b", "prefix")]:
        with pytest.raises(BadSettings, match="PORTRAIT_STORAGE_URL") as err:
            Settings.load({"data_dir": tmp_path, "storage_url": url}, env={})
        assert words in str(err.value)
    with pytest.raises(BadSettings, match="PORTRAIT_STORAGE_URL is not"):
        Settings.load({"data_dir": tmp_path, "storage_endpoint_url": endpoint}, env={})
    with pytest.raises(BadSettings, match="PORTRAIT_STORAGE_ENDPOINT_URL must be"):
        Settings.load({"data_dir": tmp_path, "storage_url": f"s3://{bucket}", "storage_endpoint_url": "ftp://x"},
                      env={})
    with pytest.raises(BadSettings, match="does not exist"):
        make_storage(tmp_path, "s3://no-such-bucket-here/p", endpoint)
    settings = Settings.load({"data_dir": tmp_path},
                             env={"PORTRAIT_STORAGE_URL": f"s3://{bucket}/p",
                                  "PORTRAIT_STORAGE_ENDPOINT_URL": endpoint})
    assert (settings.storage_url, settings.storage_endpoint_url) == (f"s3://{bucket}/p", endpoint)
    assert Settings.load({"data_dir": tmp_path}, env={}).storage_url == ""  # default: files in the data dir


def test_photos_on_the_object_store(endpoint, bucket, tmp_path):
    a = s3(endpoint, bucket, tmp_path / "a" / "cache")
    tenant, ident = new_id(), new_id()
    photos = {new_id(): bytes([i]) * (100 + i) for i in range(3)}
    names = [a.put_photo(tenant, ident, pid, ".jpg", data) for pid, data in photos.items()]
    photo_prefix = f"some/prefix/tenants/{tenant}/identities/{ident}/photos/"
    assert keys(endpoint, bucket) == sorted(photo_prefix + n for n in names)

    d = a.photos_dir(tenant, ident)
    assert d.is_relative_to(tmp_path / "a" / "cache")
    assert files(d) == {f"{pid}.jpg": data for pid, data in photos.items()}
    gone = names[0]
    a.delete_photo(tenant, ident, gone)
    assert gone not in "".join(keys(endpoint, bucket)) and not (d / gone).exists()

    b = s3(endpoint, bucket, tmp_path / "b" / "cache")  # another machine, an empty cache
    (b.cache / "tenants" / tenant / "identities" / ident / "photos").mkdir(parents=True)
    (b.cache / "tenants" / tenant / "identities" / ident / "photos" / gone).write_bytes(b"stale")  # left from before
    assert files(b.photos_dir(tenant, ident)) == {n: photos[n[:-4]] for n in names[1:]}  # exactly the current ones
    c = s3(endpoint, bucket, tmp_path / "c" / "cache")  # many requests of one web process at once
    with ThreadPoolExecutor(6) as pool:
        seen = list(pool.map(lambda _: files(c.photos_dir(tenant, ident)), range(12)))
    assert all(f == {n: photos[n[:-4]] for n in names[1:]} for f in seen)

    with pytest.raises(ValueError):
        a.put_photo(tenant, ident, new_id(), ".jpg/../../x", b"x")
    for bad in ("../" + tenant, tenant.upper(), "", "x" * 32):
        with pytest.raises(ValueError):
            a.put_photo(bad, ident, new_id(), ".jpg", b"x")
        with pytest.raises(ValueError):
            a.photos_dir(tenant, bad)
        with pytest.raises(ValueError):
            a.job_dir(bad, new_id())
    a.delete_identity(tenant, ident)
    assert keys(endpoint, bucket) == [] and not (a.cache / "tenants" / tenant / "identities" / ident).exists()


def test_unused_cache_folders_are_dropped_and_fetched_again(endpoint, bucket, tmp_path):
    """Another machine's cache does not grow for ever: a folder unused for cache_hours is dropped (the
    bucket keeps it, so the next use downloads it again); a job being written is never dropped."""
    import os
    import time

    from server.storage import prune_cache

    web = s3(endpoint, bucket, tmp_path / "web" / "cache")
    tenant, ident, job, running = new_id(), new_id(), new_id(), new_id()
    web.put_photo(tenant, ident, new_id(), ".jpg", b"photo bytes")
    out = web.job_dir(tenant, job)
    (out / "portrait.png").write_bytes(b"result")
    web.publish_job(tenant, job)
    photos = web.photos_dir(tenant, ident)
    result = web.open_result(tenant, job, "portrait.png")
    writing = web.job_dir(tenant, running)  # pinned until published
    (writing / "partial.png").write_bytes(b"half")
    assert prune_cache(web) == 0  # all in use now
    old = time.time() - 25 * 3600
    for folder in (photos.parent, out, writing):
        for p in [folder, *folder.rglob("*")]:
            os.utime(p, (old, old))
    assert prune_cache(web) == 2  # the photos and the finished job; the job being written stays
    assert not photos.exists() and not result.exists() and (writing / "partial.png").read_bytes() == b"half"
    assert web.open_result(tenant, job, "portrait.png").read_bytes() == b"result"  # fetched again
    assert [p.read_bytes() for p in web.photos_dir(tenant, ident).iterdir()] == [b"photo bytes"]


@pytest.mark.slow
def test_a_published_job_is_read_back_by_another_machine(endpoint, bucket, tmp_path):
    worker = s3(endpoint, bucket, tmp_path / "worker" / "cache")
    tenant, job, other = new_id(), new_id(), new_id()
    out = worker.job_dir(tenant, job)
    assert out.is_dir() and not any(out.iterdir())
    (out / "train").mkdir()
    for i in range(3):
        (out / "train" / f"{i:04d}.png").write_bytes(b"crop%d" % i)
    (out / "report.json").write_text('{"photos": []}')
    (out / "portrait.png").write_bytes(b"first attempt")
    worker.publish_job(tenant, job)
    prefix = f"some/prefix/tenants/{tenant}/jobs/{job}/"
    assert keys(endpoint, bucket) == sorted(prefix + rel for rel in files(out))

    web = s3(endpoint, bucket, tmp_path / "web" / "cache")
    assert not web.job_dir(tenant, other, create=False).exists()  # nothing published: nothing made up
    got = web.job_dir(tenant, job, create=False)
    assert got.is_relative_to(tmp_path / "web") and files(got) == files(out)

    # a second attempt starts from an empty folder; publishing it removes what the first one left
    out = worker.job_dir(tenant, job)
    assert not any(out.iterdir())
    (out / "portrait.png").write_bytes(b"second attempt")
    (out / "result.json").write_text("{}")
    worker.publish_job(tenant, job)
    assert keys(endpoint, bucket) == [prefix + "portrait.png", prefix + "result.json"]
    assert files(web.job_dir(tenant, job, create=False)) == {"portrait.png": b"second attempt", "result.json": b"{}"}

    fresh = s3(endpoint, bucket, tmp_path / "fresh" / "cache")  # open_result fetches only the file asked for
    p = fresh.open_result(tenant, job, "portrait.png")
    assert p.read_bytes() == b"second attempt" and files(fresh.cache) == {
        f"tenants/{tenant}/jobs/{job}/portrait.png": b"second attempt"}

    # results stay inside their own job
    o = worker.job_dir(tenant, other)
    (o / "secret.png").write_bytes(b"another job's")
    worker.publish_job(tenant, other)
    for bad in ("../" + other + "/secret.png", "/etc/passwd", "a/../../" + other + "/secret.png", "", ".",
                "./portrait.png", "a//b", "missing.png", "..\\x"):
        with pytest.raises(FileNotFoundError):
            fresh.open_result(tenant, job, bad)
    with pytest.raises(ValueError):
        fresh.open_result(tenant, "../" + other, "secret.png")

    fresh.delete_job(tenant, job)
    assert keys(endpoint, bucket) == [f"some/prefix/tenants/{tenant}/jobs/{other}/secret.png"]
    assert not (fresh.cache / "tenants" / tenant / "jobs" / job).exists()
    worker.delete_tenant(tenant)
    assert keys(endpoint, bucket) == [] and not (worker.cache / "tenants" / tenant).exists()


@pytest.mark.slow
def test_deleting_a_large_job_removes_every_page_of_objects(endpoint, bucket, tmp_path):
    """More objects than one listing page (1000) and one DeleteObjects request hold."""
    st = s3(endpoint, bucket, tmp_path / "m" / "cache")
    tenant, job, keep = new_id(), new_id(), new_id()
    out = st.job_dir(tenant, job)
    for i in range(1003):
        (out / f"{i:05d}.txt").write_text(str(i))
    st.publish_job(tenant, job)
    st.put_photo(tenant, keep, new_id(), ".png", b"kept")
    assert len(keys(endpoint, bucket)) == 1004
    assert len(files(s3(endpoint, bucket, tmp_path / "n" / "cache").job_dir(tenant, job, create=False))) == 1003
    st.delete_job(tenant, job)
    assert [k.split("/")[4] for k in keys(endpoint, bucket)] == ["identities"]  # only the other identity's photo


@pytest.mark.slow
def test_the_service_end_to_end_on_the_object_store(endpoint, bucket, tmp_path, monkeypatch):
    """Web side and worker with their own data dirs: they share the SQLite database and the bucket only."""
    from portrait.samples import write_sample_photos
    from server.service import Service
    from server.worker import Worker

    monkeypatch.setenv("PORTRAIT_STORAGE_URL", f"s3://{bucket}/portrait")
    monkeypatch.setenv("PORTRAIT_STORAGE_ENDPOINT_URL", endpoint)
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    web = Service(Settings.load({"data_dir": tmp_path / "web", "database_url": db}))
    assert isinstance(web.storage, S3Storage)
    t, _ = web.create_tenant("studio")
    ident = web.create_identity(t["id"], "grace")
    for path in write_sample_photos(tmp_path / "samples"):
        web.add_photo(t["id"], ident["id"], path.name, path.read_bytes())
    photo_keys = keys(endpoint, bucket, f"portrait/tenants/{t['id']}/identities/{ident['id']}/photos/")
    accepted = [p for p in web.get_identity(t["id"], ident["id"])["photos"] if p["accepted"]]
    assert len(photo_keys) == len(accepted) >= 5
    job = web.submit_job(t["id"], "run", ident["id"], templates=["studio-grey"],
                         options={"variants": 1, "max_tries": 1})

    wsettings = Settings.load({"data_dir": tmp_path / "worker", "database_url": db})
    assert Worker(wsettings, service=Service(wsettings)).run_forever(max_jobs=1) == 1  # closes itself
    done = web.get_job(t["id"], job["id"])
    assert done["state"] == "succeeded", done["error"]
    assert len(done["results"]) == 1
    assert keys(endpoint, bucket, f"portrait/tenants/{t['id']}/jobs/{job['id']}/")  # published

    path = web.result_path(t["id"], done["results"][0]["id"])
    assert path.is_relative_to(tmp_path / "web" / "cache")  # fetched from the store, not the worker's folder
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(path.read_bytes())) as im:
        assert im.format == "PNG" and min(im.size) >= 256
    worker_copy = next((tmp_path / "worker" / "cache" / "tenants" / t["id"] / "jobs" / job["id"]).rglob(path.name))
    assert worker_copy.read_bytes() == path.read_bytes()
    assert web.job_report(t["id"], job["id"])["photos"]  # the report, synced down from the store

    web.delete_identity(t["id"], ident["id"])
    assert keys(endpoint, bucket, f"portrait/tenants/{t['id']}/") == []
    assert not (tmp_path / "web" / "cache" / "tenants" / t["id"] / "jobs" / job["id"]).exists()
    # The worker's machine still had the photos and the portraits cached: its next maintenance drops them,
    # not the 24 h prune.
    worker_cache = tmp_path / "worker" / "cache" / "tenants" / t["id"]
    assert worker_copy.exists()
    # A web-only machine (no worker there) with the same files cached sweeps its cache too, at start and
    # every 10 s, until its service closes.
    import shutil

    from server.retention import sweep_cache_until_closed

    shutil.copytree(tmp_path / "worker" / "cache", tmp_path / "web2" / "cache")
    web2_copy = tmp_path / "web2" / worker_copy.relative_to(tmp_path / "worker")
    assert web2_copy.exists()
    web2 = Service(Settings.load({"data_dir": tmp_path / "web2", "database_url": db}))
    sweeper = sweep_cache_until_closed(web2)
    deadline = time.monotonic() + 15
    while web2_copy.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not web2_copy.exists()
    web2.close()
    sweeper.join(5)
    assert not sweeper.is_alive()  # it ends with its service
    local = Service(Settings.load({"data_dir": tmp_path / "local"}, env={}))
    assert sweep_cache_until_closed(local) is None  # a local data dir is the store itself: no cache to sweep
    local.close()
    wsvc = Service(wsettings)
    Worker(wsettings, service=wsvc).maintenance(force=True)
    assert not worker_copy.exists()
    assert not (worker_cache / "jobs" / job["id"]).exists()
    assert not (worker_cache / "identities" / ident["id"]).exists()
    wsvc.close()
    web.close()


@pytest.mark.slow
def test_a_failed_jobs_report_is_published_and_a_lost_store_fails_the_job(endpoint, bucket, tmp_path, monkeypatch):
    """A preprocess job that ends `failed` (too few usable photos) still publishes report.json, which the
    web side reads with an empty cache; a worker whose bucket is gone fails the job with a clear code."""
    import boto3
    from portrait.samples import write_sample_photos
    from server.service import Service
    from server.worker import Worker

    monkeypatch.setenv("PORTRAIT_STORAGE_URL", f"s3://{bucket}")
    monkeypatch.setenv("PORTRAIT_STORAGE_ENDPOINT_URL", endpoint)
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    web = Service(Settings.load({"data_dir": tmp_path / "web", "database_url": db}))
    t, _ = web.create_tenant("studio")
    ident = web.create_identity(t["id"], "grace")
    for path in write_sample_photos(tmp_path / "samples"):
        web.add_photo(t["id"], ident["id"], path.name, path.read_bytes())
    job = web.submit_job(t["id"], "preprocess", ident["id"], options={"min_photos": 40})
    wsettings = Settings.load({"data_dir": tmp_path / "worker", "database_url": db})
    try:
        assert Worker(wsettings, service=Service(wsettings)).run_forever(max_jobs=1) == 1
        done = web.get_job(t["id"], job["id"])
        assert done["state"] == "failed" and done["error"]["code"] == "not_enough_photos", done["error"]
        report = web.job_report(t["id"], job["id"])
        assert len(report["photos"]) == len(web.get_identity(t["id"], ident["id"])["photos"])

        web.delete_identity(t["id"], ident["id"])
        assert keys(endpoint, bucket) == []
        worker = Worker(wsettings, service=Service(wsettings))
        boto3.client("s3", endpoint_url=endpoint).delete_bucket(Bucket=bucket)  # the store is lost
        lost = web.submit_job(t["id"], "_empty", internal=True)
        assert worker.run_forever(max_jobs=1) == 1  # the worker lives on
        err = web.get_job(t["id"], lost["id"])["error"]
        assert err["code"] == "storage_unavailable" and "could not be stored" in err["message"]
        # The web side too: an upload while the store is gone is a typed 503, and nothing is half-stored.
        other = web.create_identity(t["id"], "later")
        with pytest.raises(StorageUnavailable) as exc:
            web.add_photo(t["id"], other["id"], "a.jpg", (tmp_path / "samples" / "astronaut_01.jpg").read_bytes())
        assert error_response(exc.value)[0] == 503 and exc.value.code == "storage_unavailable"
        assert web.get_identity(t["id"], other["id"])["photos"] == []
    finally:
        web.close()
