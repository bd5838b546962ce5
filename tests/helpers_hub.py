"""A local server speaking the Hugging Face Hub's file protocol, for `portrait models fetch` tests.

What huggingface_hub reads (file_download.get_hf_file_metadata / http_get):
- HEAD {hub}/{repo}/resolve/{revision}/{path} (spaces: /spaces/{repo}/...) answers with X-Repo-Commit
  and an ETag. For an LFS file (weights) the Hub answers 302 to a CDN on another origin, carrying
  X-Linked-Etag (the file's sha256) and X-Linked-Size; small git files answer 200 with the git blob
  sha1 as ETag and a Content-Length.
- GET on the CDN location (or the resolve URL for git files) streams the bytes; a `Range: bytes=N-`
  request gets 206 with Content-Range (that is how interrupted downloads resume).

Two HTTP servers (hub and CDN, different ports so different origins) share one `HubState`.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


@dataclass
class HubFile:
    data: bytes
    lfs: bool = True
    claimed_sha256: str | None = None  # what the server says the sha256 is (a lying mirror), default the truth

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class HubState:
    commit: str = "c0ffee" * 6 + "abcd"
    files: dict[tuple[str, str], HubFile] = field(default_factory=dict)  # (repo, path) -> file (any revision)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range header)
    stall_after: int | None = None  # the next CDN GET sends this many bytes, then waits for `release`
    release: threading.Event = field(default_factory=threading.Event)
    stalled: threading.Event = field(default_factory=threading.Event)
    cdn_base: str = ""
    etag_override: str | None = None  # the ETag sent for small git files (a mirror that lies), default the truth

    def add(self, repo: str, path: str, data: bytes, *, lfs: bool = True, claimed_sha256: str | None = None) -> HubFile:
        f = HubFile(data, lfs, claimed_sha256)
        self.files[(repo, path)] = f
        return f


def _handler(state: HubState, role: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _lookup(self):
            path = unquote(self.path.split("?")[0]).lstrip("/")
            if role == "cdn":
                repo, _, rest = path.partition("/@/")
                return state.files.get((repo, rest)), rest
            if path.startswith("spaces/"):
                path = path[len("spaces/"):]
            parts = path.split("/")
            if "resolve" not in parts:
                return None, path
            i = parts.index("resolve")
            repo, file_path = "/".join(parts[:i]), "/".join(parts[i + 2:])
            return state.files.get((repo, file_path)), (repo, file_path)

        def _not_found(self):
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self):
            self._serve(body=False)

        def do_GET(self):
            self._serve(body=True)

        def _serve(self, body: bool):
            state.requests.append((self.command, self.path, self.headers.get("Range")))
            f, key = self._lookup()
            if f is None:
                return self._not_found()
            if role == "hub" and f.lfs:
                repo, file_path = key
                self.send_response(302)
                self.send_header("Location", f"{state.cdn_base}/{repo}/@/{file_path}")
                self.send_header("X-Repo-Commit", state.commit)
                self.send_header("X-Linked-Etag", f'"{f.claimed_sha256 or f.sha256}"')
                self.send_header("X-Linked-Size", str(len(f.data)))
                self.send_header("ETag", f'"{hashlib.sha1(f.data).hexdigest()}"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start = int(rng[len("bytes="):].split("-")[0])
            payload = f.data[start:]
            self.send_response(206 if start else 200)
            if role == "hub":
                blob = hashlib.sha1(b"blob %d\0" % len(f.data) + f.data).hexdigest()  # git's blob id
                self.send_header("X-Repo-Commit", state.commit)
                self.send_header("ETag", f'"{state.etag_override or blob}"')
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(f.data) - 1}/{len(f.data)}")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not body:
                return
            if state.stall_after is not None and role == "cdn":
                cut, state.stall_after = state.stall_after, None
                self.wfile.write(payload[:cut])
                self.wfile.flush()
                state.stalled.set()
                state.release.wait(60)
                self.close_connection = True
                return
            self.wfile.write(payload)

    return Handler


class HubServer:
    """`with HubServer() as hub:` → hub.endpoint (the Hub URL to pass as --endpoint), hub.state."""

    def __init__(self):
        self.state = HubState()
        self._cdn = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state, "cdn"))
        self._hub = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state, "hub"))
        self.state.cdn_base = f"http://127.0.0.1:{self._cdn.server_address[1]}"
        self.endpoint = f"http://127.0.0.1:{self._hub.server_address[1]}"
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self._cdn, self._hub)]

    def __enter__(self) -> "HubServer":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.state.release.set()
        for s in (self._hub, self._cdn):
            s.shutdown()
            s.server_close()
