"""`portrait batch MANIFEST.csv --server URL --key KEY`: a studio's batch on a portrait server.

A plain HTTP client of the REST API (docs/api.md), standard library only: for each manifest row it
creates an identity, uploads the row's photos one per request, then submits all rows as one batch
and follows it with one progress bar across rows. With `--out` it downloads each row's portraits
into OUT/NAME/ and writes OUT/batch.json. A row that cannot be uploaded (missing folder, every
photo refused) is reported and the others go on. POSTs carry an `Idempotency-Key`, so a retried
request never creates a second identity or batch.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from ..errors import PortraitError
from ..imageio import image_files

if TYPE_CHECKING:
    from ..batch import BatchRow

TERMINAL = ("succeeded", "failed", "cancelled")


class ServerError(PortraitError):
    """The server refused a request (its error code and message), or could not be reached."""

    def __init__(self, code: str, message: str, status: int | None = None, details: dict | None = None):
        self.code = code
        self.status = status
        self.details = details or {}
        super().__init__(f"server: {code}: {message}")

    def to_dict(self) -> dict:
        return {"error": self.code, "status": self.status, "message": str(self), "details": self.details}


@dataclass
class ApiClient:
    server: str
    key: str
    timeout: float = 60.0
    retries: int = 3

    def url(self, path: str) -> str:
        return self.server.rstrip("/") + "/api/v1" + path

    def request(self, method: str, path: str, *, body: bytes | None = None, content_type: str | None = None,
                idempotency_key: str | None = None, raw: bool = False):
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        url = path if path.startswith(("http://", "https://")) else self.url(path)
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(url, data=body, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    data = resp.read()
                    return data if raw else (json.loads(data) if data else None)
            except urllib.error.HTTPError as exc:
                if exc.code in (429, 502, 503, 504) and attempt < self.retries:
                    time.sleep(float(exc.headers.get("Retry-After") or 2 ** attempt))
                    continue
                raise _server_error(exc) from None
            except (urllib.error.URLError, OSError) as exc:
                if attempt < self.retries:
                    time.sleep(2 ** attempt)
                    continue
                raise ServerError("unreachable", f"{url}: {getattr(exc, 'reason', exc)}") from None
        raise AssertionError("unreachable")

    def post_json(self, path: str, payload: dict, idempotency_key: str | None = None):
        return self.request("POST", path, body=json.dumps(payload).encode(), content_type="application/json",
                            idempotency_key=idempotency_key)

    def upload(self, identity_id: str, photo: Path, idempotency_key: str | None = None) -> dict:
        body, ctype = multipart("photos", photo.name, photo.read_bytes())
        return self.request("POST", f"/identities/{identity_id}/photos", body=body, content_type=ctype,
                            idempotency_key=idempotency_key)


def _server_error(exc: urllib.error.HTTPError) -> ServerError:
    try:
        err = json.loads(exc.read() or b"{}").get("error") or {}
    except ValueError:
        err = {}
    return ServerError(err.get("code") or f"http_{exc.code}", err.get("message") or exc.reason, exc.code,
                       err.get("details"))


def multipart(field_name: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body holding one file (what a mini-program's uploadFile sends)."""
    boundary = uuid.uuid4().hex
    ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field_name}\"; filename=\"{safe}\"\r\n"
            f"Content-Type: {ctype}\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@dataclass
class Row:
    name: str
    photos: Path
    templates: list[str]
    styles: list[str] = field(default_factory=list)  # set: a create row (new scenes)
    identity_id: Optional[str] = None
    uploaded: list[dict] = field(default_factory=list)
    error: Optional[dict] = None
    job: Optional[dict] = None


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:40]


def upload_rows(client: ApiClient, rows: list[Row], run_key: str, progress: Callable) -> None:
    """Create an identity per row and upload its photos; a row that fails keeps its error, the rest go on."""
    total = sum(len(image_files(r.photos)) if r.photos.is_dir() else 0 for r in rows) or 1
    done = 0
    for row in rows:
        try:
            if not row.photos.is_dir():
                raise ServerError("missing_photos", f"{row.photos}: photos folder does not exist")
            files = image_files(row.photos)
            if not files:
                raise ServerError("no_photos", f"{row.photos}: no image files")
            ident = client.post_json("/identities", {"name": row.name}, _key(run_key, row.name, "identity"))
            row.identity_id = ident["id"]
            for photo in files:
                try:
                    rec = client.upload(row.identity_id, photo, _key(run_key, row.name, photo.name))
                    row.uploaded.extend(rec.get("photos", []))
                except ServerError as exc:  # one refused photo (not an image, too big) is that photo's verdict
                    if exc.status is None or exc.status >= 500 or exc.status in (401, 429):
                        raise
                    row.uploaded.append({"filename": photo.name, "accepted": False, "reasons": [exc.code],
                                         "message": str(exc)})
                done += 1
                progress("upload", done, total)
            if not any(p.get("accepted", True) for p in row.uploaded):
                raise ServerError("no_usable_photos", f"{row.photos}: the server refused every photo")
        except ServerError as exc:
            if exc.status == 401 or exc.code == "unreachable":  # no row can work: stop with the reason
                raise
            row.error = {"error": exc.code, "message": str(exc)}


def follow_batch(client: ApiClient, batch_id: str, progress: Callable, poll: float = 1.0,
                 timeout: float | None = None) -> dict:
    """Poll the batch until every row's job has ended; one progress bar across rows (the batch's 0..1)."""
    start = time.monotonic()
    while True:
        batch = client.request("GET", f"/batches/{batch_id}")
        progress("batch", int(round(1000 * float(batch.get("progress", 0.0)))), 1000)
        if batch.get("done") or all(j["state"] in TERMINAL for j in batch.get("jobs", [])):
            return batch
        if timeout is not None and time.monotonic() - start > timeout:
            raise ServerError("timeout", f"batch {batch_id} still running after {timeout:.0f} s")
        time.sleep(poll)


def download_results(client: ApiClient, rows: list[Row], out: Path) -> None:
    for row in rows:
        if not row.job:
            continue
        folder = out / row.name
        folder.mkdir(parents=True, exist_ok=True)
        for i, res in enumerate(row.job.get("results", [])):
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in (res.get("template") or "result"))
            data = client.request("GET", res["url"], raw=True)
            target = folder / f"{i + 1:02d}-{safe}.png"
            target.write_bytes(data)
            res["file"] = str(target)


def remote_batch(manifest_rows: "list[BatchRow]", server: str, key: str, *, out: Path | None,
                 progress: Callable, kind: str = "run", options: dict | None = None, name: str = "",
                 poll: float = 1.0, create_options: dict | None = None) -> list[dict]:
    """The whole client flow over `portrait.batch.read_manifest`'s rows (safe, unique names); one
    summary entry per row: status done / partial / failed, as a local batch reports them. A row with
    styles is a create job with `create_options`."""
    client = ApiClient(server, key)
    rows = [Row(name=r.name, photos=Path(r.photos), templates=list(r.templates), styles=list(r.styles))
            for r in manifest_rows]
    # Retries of this run's requests are idempotent; running the manifest again is a new batch.
    run_key = _key(server, json.dumps([[r.name, str(r.photos)] for r in rows]), uuid.uuid4().hex)
    upload_rows(client, rows, run_key, progress)
    ready = [r for r in rows if r.error is None]
    if ready:
        if any(not r.templates and not r.styles for r in ready):
            names = [t["name"] for t in client.request("GET", "/templates")]
            for r in ready:
                r.templates = r.templates or ([] if r.styles else names)
        payload = {"kind": kind, "name": name[:200], "rows": [
            {"identity_id": r.identity_id, "kind": "create", "styles": r.styles, "options": dict(create_options or {})}
            if r.styles else {"identity_id": r.identity_id, "templates": r.templates, "options": dict(options or {})}
            for r in ready]}
        batch = client.post_json("/batches", payload, _key(run_key, "batch"))
        batch = follow_batch(client, batch["id"], progress, poll)
        for brief in batch["jobs"]:
            ready[brief["row"]].job = client.request("GET", f"/jobs/{brief['id']}")
        if out is not None:
            download_results(client, ready, out)
    return [_summary(r) for r in rows]


def _summary(row: Row) -> dict:
    entry = {"name": row.name, "photos": str(row.photos), "identity_id": row.identity_id,
             "uploaded": len(row.uploaded), "rejected_at_upload": [p for p in row.uploaded if p.get("accepted") is False]}
    if row.error:
        entry.update(status="failed", **row.error)
    elif row.job:
        results = row.job.get("results", [])
        made = {r.get("template") for r in results}
        status = "failed" if row.job["state"] != "succeeded" or not results else (
            "done" if all(t in made for t in row.job.get("templates") or row.job.get("styles") or []) else "partial")
        entry.update(status=status, job_id=row.job["id"], state=row.job["state"], results=results,
                     error=row.job.get("error"))
        if row.job.get("results"):
            entry["best"] = row.job["results"][0]
    return entry
