"""`portrait models fetch`: download a model's files from the Hugging Face Hub into the manifest's paths.

Only this command touches the network; nothing at run time does. For each file of a model's
`download` (portrait/models/manifest.py):

1. HEAD `{endpoint}/{repo}/resolve/{revision}/{file}` (huggingface_hub's `get_hf_file_metadata`) gives
   the commit, the ETag (the LFS sha256 for weights) and the size. A file whose recorded sha256 differs
   from the server's LFS hash is refused before a byte is downloaded.
2. The body is appended to `<models>/.partial/<model>/<file>.part` (huggingface_hub's `http_get`,
   which retries dropped connections with a Range request); `.part.json` beside it records the ETag,
   so a later run resumes an interrupted download with `Range: bytes=N-` instead of starting again.
3. The finished file's sha256 is computed and compared with the recorded one (or, where the manifest
   records none, with the server's LFS hash). A mismatch deletes the partial file: nothing is left.
4. The file is moved into place (`.bin` pickles named `convert` become the manifest's .safetensors).

Files that cannot be fetched (not on the Hub, behind a licence gate) come back as `manual` results
carrying the exact URL and steps. `--endpoint` / HF_ENDPOINT select a mirror.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import ModelHashError, PortraitError
from ..progress import ProgressCallback
from .manifest import Download, Manifest, ModelSpec, SourceFile, is_commit, sha256_file

# `--all-for TARGET`: every model a recipe can use on that base, and the face models.
TARGETS: dict[str, tuple[str, ...]] = {
    "sd15": ("sd15", "controlnet-canny", "controlnet-openpose", "controlnet-tile", "ip-adapter-faceid",
             "ip-adapter-faceid-plusv2", "clip-vision-vit-h", "arcface-buffalo", "scrfd"),
    "sdxl": ("sdxl", "controlnet-canny-sdxl", "controlnet-openpose-sdxl", "controlnet-tile-sdxl",
             "instantid-adapter", "instantid-controlnet", "arcface-antelopev2", "scrfd"),
    "faces": ("scrfd", "arcface-buffalo", "arcface-antelopev2"),
}


class FetchError(PortraitError):
    """A download failed (network, server refused, not found); the partial file is kept for a resume."""

    code = "fetch_failed"

    def __init__(self, model: str, message: str):
        self.model = model
        super().__init__(f"model '{model}': {message}")

    def to_dict(self) -> dict:
        return {"error": self.code, "model": self.model, "message": str(self)}


@dataclass(frozen=True)
class FetchedFile:
    repo_path: str
    path: str
    sha256: str
    size: int
    state: str  # "downloaded" | "resumed" | "present"
    pinned: bool  # revision is a commit and the sha256 came from the manifest (not only from the server)


@dataclass(frozen=True)
class FetchResult:
    name: str
    state: str  # "fetched" | "present" | "manual"
    path: str
    files: tuple[FetchedFile, ...] = ()
    message: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {"name": self.name, "state": self.state, "path": self.path, "message": self.message,
                "warnings": list(self.warnings),
                "files": [f.__dict__ for f in self.files]}


def names_for(target: str) -> tuple[str, ...]:
    try:
        return TARGETS[target]
    except KeyError:
        from ..errors import ConfigError

        raise ConfigError(f"--all-for {target!r}: choose one of {', '.join(TARGETS)}") from None


def manual_steps(manifest: Manifest, spec: ModelSpec) -> str:
    """The exact URL and what to do by hand, for a model `fetch` cannot download."""
    dl = spec.download
    path = manifest.path(spec.name)
    if dl is not None and dl.gated:
        return (f"{dl.page()} asks you to accept its licence: open it, log in and accept, then run "
                f"`huggingface-cli login` (or set HF_TOKEN) and `portrait models fetch {spec.name}` again.")
    if dl is None or not (dl.url or dl.steps):
        return f"no known download; place the files at {path} (see `portrait models list`)."
    url = f"1. download {dl.url}\n  2. " if dl.url else "1. "
    steps = dl.steps.replace("<models>", str(manifest.models_dir))
    return f"{url}{steps}\n  path: {path}"


# -- progress ---------------------------------------------------------------------------------------
def _bar_class(progress: ProgressCallback | None, label: str):
    """A tqdm-like class huggingface_hub's http_get drives; it feeds our (stage, done, total) callback."""

    class _Bar:
        def __init__(self, *args, total=None, initial=0, **kwargs):
            self.total = int(total or 0)
            self.n = int(initial or 0)
            self._report()

        def _report(self):
            if progress is not None:
                progress(label, self.n, max(self.total, self.n, 1))

        def update(self, n=1):
            self.n += int(n)
            self._report()

        def close(self):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    return _Bar


# -- one file ---------------------------------------------------------------------------------------
def _meta(url: str, token, endpoint: str | None, name: str):
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        return get_hf_file_metadata(url, token=token, endpoint=endpoint)
    except GatedRepoError as exc:
        raise FetchError(name, f"{url} is behind a licence gate: accept it on the model page, log in "
                         f"(`huggingface-cli login` or HF_TOKEN) and fetch again ({exc.__class__.__name__})") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise FetchError(name, f"the server refused {url} (HTTP {status})") from exc
    except (LocalEntryNotFoundError, OSError) as exc:
        raise FetchError(name, f"cannot reach {url}: {exc}") from exc
    except Exception as exc:  # httpx transport errors come in many types
        raise FetchError(name, f"cannot reach {url}: {exc.__class__.__name__}: {exc}") from exc


def _is_sha256(value: str | None) -> bool:
    return bool(value) and len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())


def _git_sha1(path: Path) -> str:
    """The git blob id of a file: what the Hub sends as ETag for small (non-LFS) files like config.json."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _matches_git_etag(path: Path, etag: str | None) -> bool | None:
    """True/False when the ETag is a git blob id (40 hex), None when it is something else."""
    if not etag or len(etag) != 40 or any(c not in "0123456789abcdef" for c in etag.lower()):
        return None
    return _git_sha1(path) == etag.lower()


def _prune(folder: Path, stop: Path) -> None:
    """Remove empty folders from `folder` up to (not including) `stop`."""
    while folder != stop and folder.is_dir() and stop in folder.parents and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def _fetch_file(name: str, dl: Download, f: SourceFile, dest: Path, staging: Path, *, endpoint: str | None,
                token, progress: ProgressCallback | None) -> tuple[FetchedFile, Path | None]:
    """Download one file into `staging` and check its hash: (record, the verified staged file, or None
    when `dest` already holds the right bytes). ModelHashError on a mismatch (the partial is deleted)."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    revision = f.revision or dl.revision
    url = hf_hub_url(dl.repo, f.repo_path, repo_type=None if dl.repo_type == "model" else dl.repo_type,
                     revision=revision, endpoint=endpoint)
    meta = _meta(url, token, endpoint, name)
    server_sha = meta.etag if _is_sha256(meta.etag) else None
    expected = (f.sha256 or server_sha or "").lower() or None
    pinned = bool(f.sha256) and is_commit(revision)
    if f.sha256 and server_sha and f.sha256.lower() != server_sha.lower():
        raise ModelHashError(name, url, f.sha256, server_sha)
    if f.size is not None and meta.size is not None and f.size != meta.size:
        raise FetchError(name, f"{url} is {meta.size} bytes, the manifest records {f.size}: a different file")
    have = sha256_file(dest) if dest.is_file() and expected else None
    if dest.is_file() and (have == expected if expected else _matches_git_etag(dest, meta.etag)):
        return FetchedFile(f.repo_path, str(dest), have or sha256_file(dest), dest.stat().st_size, "present", pinned), None

    part = staging / (f.repo_path + ".part")
    info = part.with_name(part.name + ".json")
    part.parent.mkdir(parents=True, exist_ok=True)
    resume = 0
    if part.is_file() and info.is_file():
        try:
            same = bool(meta.etag) and json.loads(info.read_text()).get("etag") == meta.etag
        except (OSError, ValueError):
            same = False
        resume = part.stat().st_size if same else 0
    if meta.size is not None and resume > meta.size:
        resume = 0
    info.write_text(json.dumps({"etag": meta.etag, "url": url, "commit": meta.commit_hash, "size": meta.size}))
    with open(part, "r+b" if resume else "wb") as fh:
        fh.seek(resume)
        fh.truncate()
        try:
            http_get(meta.location, fh, resume_size=resume, headers=build_hf_headers(token=token),
                     expected_size=meta.size, displayed_filename=f.repo_path,
                     tqdm_class=_bar_class(progress, f"download {Path(f.repo_path).name}"))
        except Exception as exc:  # keep the partial file: the next run resumes it
            raise FetchError(name, f"download of {url} stopped after {fh.tell()} bytes ({exc.__class__.__name__}: "
                             f"{exc}); run the same command again to resume") from exc
    actual = sha256_file(part)
    if expected and actual != expected:
        raise ModelHashError(name, url, expected, actual)
    if not expected and _matches_git_etag(part, meta.etag) is False:  # a small git file: its blob id
        raise ModelHashError(name, url, f"git blob {meta.etag}", f"git blob {_git_sha1(part)}")
    return FetchedFile(f.repo_path, str(dest), actual, part.stat().st_size, "resumed" if resume else "downloaded",
                       pinned), part


def _write_record(manifest: Manifest, name: str, path: Path, dl: Download, done: list[FetchedFile]) -> None:
    """What `models verify` checks later: each installed file's sha256 (of the converted .safetensors for a
    converted pickle), with the source it was verified against."""
    files = {}
    for fl, f in zip(dl.files, done):
        installed = Path(f.path)
        rel = "" if installed == path else str(installed.relative_to(path))
        files[rel] = sha256_file(installed) if fl.convert or not f.sha256 else f.sha256
    record = manifest.record_file(name)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"path": str(path), "repo": dl.repo, "repo_type": dl.repo_type,
                                  "revision": dl.revision, "files": files,
                                  "source_sha256": {f.repo_path: f.sha256 for f in done}}, indent=1))


# -- one model --------------------------------------------------------------------------------------
def fetch_model(manifest: Manifest, name: str, *, endpoint: str | None = None, token: str | bool | None = None,
                progress: ProgressCallback | None = None) -> FetchResult:
    """Download model `name`'s files into its manifest path (see the module docstring)."""
    from .convert import convert_to_safetensors

    spec = manifest.spec(name)
    name = spec.name
    path = manifest.path(name)
    dl = spec.download
    if spec.bundled:
        return FetchResult(name, "present", str(path), message="ships in a pip package")
    if dl is None or not dl.automatic:
        return FetchResult(name, "manual", str(path), message=manual_steps(manifest, spec))
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    staging = manifest.models_dir / ".partial" / name
    warnings = []
    if not is_commit(dl.revision) or any(fl.revision and not is_commit(fl.revision) for fl in dl.files):
        warnings.append(f"no pinned commit for {dl.repo} (revision '{dl.revision}'): the files are checked against "
                        "the server's own LFS hashes only")
    done: list[FetchedFile] = []
    staged: list[tuple[SourceFile, Path, Path]] = []  # (file, verified staged copy, where it goes)
    try:
        for i, f in enumerate(dl.files):
            if progress is not None:
                progress(f"fetch {name}", i, len(dl.files))
            target = path / f.dest if f.dest else path
            if f.convert and target.is_file():
                done.append(FetchedFile(f.repo_path, str(target), "", target.stat().st_size, "present", False))
                continue
            got, part = _fetch_file(name, dl, f, target, staging, endpoint=endpoint, token=token, progress=progress)
            done.append(got)
            if part is not None:
                staged.append((f, part, target))
    except ModelHashError:
        shutil.rmtree(staging, ignore_errors=True)  # a refused file: nothing of this model is kept
        _prune(staging.parent, manifest.models_dir)
        raise
    # every file verified: only now does anything land in the models folder
    for f, part, target in staged:
        target.parent.mkdir(parents=True, exist_ok=True)
        if f.convert:
            bin_path = part.with_name(Path(f.repo_path).name)
            os.replace(part, bin_path)
            convert_to_safetensors(bin_path, target)
        else:
            os.replace(part, target)
    _write_record(manifest, name, path, dl, done)
    if progress is not None:
        progress(f"fetch {name}", len(dl.files), len(dl.files))
    shutil.rmtree(staging, ignore_errors=True)
    _prune(staging.parent, manifest.models_dir)
    state = "present" if all(f.state == "present" for f in done) else "fetched"
    return FetchResult(name, state, str(path), tuple(done), warnings=tuple(warnings))


def fetch_models(manifest: Manifest, names: Sequence[str], *, endpoint: str | None = None,
                 token: str | bool | None = None, progress: ProgressCallback | None = None,
                 on_result: Callable[[FetchResult], None] | None = None) -> list[FetchResult]:
    """fetch_model for each name (duplicates once); stops at the first error (FetchError / ModelHashError)."""
    seen: list[str] = []
    for n in names:
        canonical = manifest.spec(n).name
        if canonical not in seen:
            seen.append(canonical)
    results = []
    for n in seen:
        r = fetch_model(manifest, n, endpoint=endpoint, token=token, progress=progress)
        results.append(r)
        if on_result is not None:
            on_result(r)
    return results
