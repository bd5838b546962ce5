"""`portrait models fetch` against a local server speaking the Hub's resolve protocol (tests/helpers_hub.py):
files land in the manifest's paths, sha256 is verified (a mismatch is refused and nothing is kept),
an interrupted download resumes with a Range request, manual models print their URL and steps."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers_fleet import wait_for
from helpers_hub import HubServer
from portrait.errors import ModelHashError
from portrait.models.fetch import fetch_model
from portrait.models.manifest import Download, Manifest, ModelSpec, SourceFile

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CLI = [sys.executable, "-c", "from portrait.cli import main; main()"]


def _cli(*args, env_extra=None, **kw):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(CLI + list(args), capture_output=True, text=True, env=env, timeout=120, **kw)


def _weights(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _spec(sha256: str | None, *, dest: str = "", path: str = "test/weights.safetensors", extra_files=()) -> ModelSpec:
    files = (SourceFile("weights.safetensors", dest, sha256), *extra_files)
    return ModelSpec("test-model", "lora", path, licence="MIT", commercial_use=True,
                     download=Download("tester/tiny-model", COMMIT, files))


@pytest.mark.slow
def test_cli_fetches_a_builtin_model_at_its_pinned_revision_into_the_manifest_path(empty_models_dir):
    vocab, merges = b'{"a": 0, "b": 1}', b"#version: 0.2\na b\n"
    with HubServer() as hub:
        repo = "stable-diffusion-v1-5/stable-diffusion-v1-5"
        hub.state.add(repo, "tokenizer/vocab.json", vocab, lfs=False)
        hub.state.add(repo, "tokenizer/merges.txt", merges, lfs=False)
        r = _cli("models", "fetch", "clip-tokenizer", "--endpoint", hub.endpoint, "--json")
        heads = [p for m, p, _ in hub.state.requests if m == "HEAD"]
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and out["models"][0]["state"] == "fetched"
    folder = empty_models_dir / "tokenizer" / "clip-vit-large-patch14"
    assert (folder / "vocab.json").read_bytes() == vocab and (folder / "merges.txt").read_bytes() == merges
    # the pinned commit from the manifest is what was asked for, file by exact name
    assert f"/{repo}/resolve/f03de327dd89b501a01da37fc5240cf4fdba85a1/tokenizer/vocab.json" in heads
    assert _files_under(empty_models_dir) == [".fetched/clip-tokenizer.json", "tokenizer/clip-vit-large-patch14/merges.txt",
                                              "tokenizer/clip-vit-large-patch14/vocab.json"]
    listed = json.loads(_cli("models", "list", "--json").stdout)
    row = next(m for m in listed["models"] if m["name"] == "clip-tokenizer")
    assert row["state"] == "present" and row["source"]["repo"] == repo and row["pin"] == "pinned"
    # `verify` checks every fetched file against the hash recorded at fetch time
    assert _cli("models", "verify", "clip-tokenizer").returncode == 0
    (folder / "merges.txt").write_bytes(merges + b"x y\n")
    bad = _cli("models", "verify", "clip-tokenizer", "--json")
    assert bad.returncode == 2 and json.loads(bad.stdout)["models"][0]["state"] == "bad_hash"
    assert "merges.txt" in json.loads(bad.stdout)["models"][0]["fix"]


def test_good_hash_is_verified_installed_and_not_downloaded_twice(tmp_path):
    data = _weights(300_000)
    sha = hashlib.sha256(data).hexdigest()
    m = Manifest(tmp_path / "models", specs=[_spec(sha)])
    with HubServer() as hub:
        hub.state.add("tester/tiny-model", "weights.safetensors", data)
        first = fetch_model(m, "test-model", endpoint=hub.endpoint)
        gets_after_first = sum(1 for meth, _, _ in hub.state.requests if meth == "GET")
        second = fetch_model(m, "test-model", endpoint=hub.endpoint)
        gets_after_second = sum(1 for meth, _, _ in hub.state.requests if meth == "GET")
    dest = tmp_path / "models" / "test" / "weights.safetensors"
    assert dest.read_bytes() == data
    assert first.state == "fetched" and first.files[0].sha256 == sha and first.files[0].pinned
    assert second.state == "present" and gets_after_second == gets_after_first == 1
    assert _files_under(tmp_path / "models") == [".fetched/test-model.json", "test/weights.safetensors"]  # no partials
    assert m.status("test-model").state == "present"  # `verify` checks the hash recorded at fetch time
    dest.write_bytes(data[:-1] + b"!")
    assert m.status("test-model").state == "bad_hash"


@pytest.mark.slow
def test_recorded_hash_that_differs_from_the_server_is_refused_and_nothing_is_left(empty_models_dir):
    """The built-in controlnet-canny records the real release's sha256; a server offering other bytes is
    refused (the folder's config.json, fetched first, is not kept either)."""
    with HubServer() as hub:
        repo = "lllyasviel/control_v11p_sd15_canny"
        hub.state.add(repo, "config.json", b'{"_class_name": "ControlNetModel"}', lfs=False)
        hub.state.add(repo, "diffusion_pytorch_model.safetensors", _weights(50_000))
        r = _cli("models", "fetch", "controlnet-canny", "--endpoint", hub.endpoint, "--json")
        gets = [p for meth, p, _ in hub.state.requests if meth == "GET" and "safetensors" in p]
    assert r.returncode == 2, r.stdout + r.stderr
    err = json.loads(r.stdout)
    assert err["error"] == "model_bad_hash" and "controlnet-canny" in err["message"]
    assert gets == []  # refused on the server's LFS hash, before downloading
    assert _files_under(empty_models_dir) == []


def test_bytes_that_do_not_match_the_hash_are_refused_after_download_and_nothing_is_left(tmp_path):
    """A mirror that claims the right sha256 but serves other bytes: caught by hashing the download."""
    good = _weights(200_000, seed=1)
    m = Manifest(tmp_path / "models", specs=[_spec(hashlib.sha256(good).hexdigest())])
    with HubServer() as hub:
        hub.state.add("tester/tiny-model", "weights.safetensors", _weights(200_000, seed=2),
                      claimed_sha256=hashlib.sha256(good).hexdigest())
        with pytest.raises(ModelHashError) as exc:
            fetch_model(m, "test-model", endpoint=hub.endpoint)
        downloaded = [p for meth, p, _ in hub.state.requests if meth == "GET"]
    assert "test-model" in str(exc.value) and downloaded
    assert _files_under(tmp_path / "models") == []
    assert m.status("test-model").state == "missing"


def test_an_interrupted_download_resumes_where_it_stopped(empty_models_dir):
    """A fetch killed mid-download (the server stalls after 11 MiB) leaves its partial file; the next run
    asks for the rest with `Range: bytes=N-` and ends with the exact file."""
    data = _weights(12 * 1024 * 1024 + 12345, seed=3)
    repo, name = "h94/IP-Adapter-FaceID", "ip-adapter-faceid_sd15_lora.safetensors"
    with HubServer() as hub:
        hub.state.add(repo, name, data)
        hub.state.stall_after = 11 * 1024 * 1024
        proc = subprocess.Popen(CLI + ["models", "fetch", "ip-adapter-faceid-lora", "--endpoint", hub.endpoint],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
        part = empty_models_dir / ".partial" / "ip-adapter-faceid-lora" / (name + ".part")
        # event-driven, with a deadline a loaded machine meets: the server has sent its 11 MiB and stalls,
        # then the client has written at least 10 MiB of them; only then the kill
        assert hub.state.stalled.wait(300), "the fetch never reached the server's stall point"
        wait_for(lambda: part.is_file() and part.stat().st_size >= 10 * 1024 * 1024, 300,
                 "the partial file to hold 10 MiB")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        hub.state.release.set()
        assert hub.state.stalled.is_set()
        kept = part.stat().st_size
        assert 0 < kept < len(data)
        result = fetch_model(Manifest(empty_models_dir), "ip-adapter-faceid-lora", endpoint=hub.endpoint)
        ranges = [rng for meth, _, rng in hub.state.requests if meth == "GET"]
    dest = empty_models_dir / "ip-adapter" / name
    assert dest.read_bytes() == data
    assert result.files[0].state == "resumed" and ranges[-1] == f"bytes={kept}-"
    assert _files_under(empty_models_dir) == [".fetched/ip-adapter-faceid-lora.json", f"ip-adapter/{name}"]


def test_the_hub_client_sees_none_of_the_developers_hub_settings():
    """conftest clears HF_TOKEN / HF_ENDPOINT / HF_HUB_OFFLINE and points HF_HOME at an empty folder before
    huggingface_hub reads them: no stored token reaches a test server, no mirror or offline mode changes
    what `models fetch` does."""
    from huggingface_hub import constants, get_token

    assert get_token() is None
    assert constants.ENDPOINT == "https://huggingface.co" and not constants.HF_HUB_OFFLINE


def test_models_that_cannot_be_fetched_print_the_url_and_steps(empty_models_dir):
    r = _cli("models", "fetch", "inswapper")
    assert r.returncode == 2
    assert "https://huggingface.co/ezioruan/inswapper_128.onnx/resolve/main/inswapper_128.onnx" in r.stderr
    assert str(empty_models_dir / "insightface" / "inswapper_128.onnx") in r.stderr
    assert _files_under(empty_models_dir) == []


def test_unreachable_endpoint_is_a_clear_error(empty_models_dir):
    r = _cli("models", "fetch", "clip-tokenizer", "--endpoint", "http://127.0.0.1:9", "--json")
    assert r.returncode == 2
    err = json.loads(r.stdout)
    assert err["error"] == "fetch_failed" and "clip-tokenizer" in err["message"]


@pytest.mark.slow
def test_small_git_files_are_checked_against_their_blob_id_and_not_fetched_twice(tmp_path):
    """config.json-like files (not LFS) carry the git blob id as ETag: a copy that does not match it is
    refused; a second fetch of a folder already in place downloads nothing."""
    cfg = b'{"_class_name": "ControlNetModel", "in_channels": 4}'
    spec = ModelSpec("test-folder", "controlnet", "test/folder", licence="MIT", commercial_use=True,
                     download=Download("tester/tiny-model", COMMIT, (SourceFile("config.json", "config.json"),)))
    m = Manifest(tmp_path / "models", specs=[spec])
    with HubServer() as hub:
        f = hub.state.add("tester/tiny-model", "config.json", cfg, lfs=False)
        assert fetch_model(m, "test-folder", endpoint=hub.endpoint).state == "fetched"
        gets = sum(1 for meth, _, _ in hub.state.requests if meth == "GET")
        assert fetch_model(m, "test-folder", endpoint=hub.endpoint).state == "present"
        assert sum(1 for meth, _, _ in hub.state.requests if meth == "GET") == gets
        # the server now sends other bytes under the same blob id (a corrupt mirror): refused, nothing kept
        (tmp_path / "models" / "test" / "folder" / "config.json").unlink()
        f.data, good = b'{"tampered": true}', f.data
        hub.state.etag_override = hashlib.sha1(b"blob %d\0" % len(good) + good).hexdigest()
        with pytest.raises(ModelHashError):
            fetch_model(m, "test-folder", endpoint=hub.endpoint)
    assert _files_under(tmp_path / "models") == [".fetched/test-folder.json"]  # the first fetch's record only


def test_antelopev2_comes_from_the_instantid_space(empty_models_dir):
    """InstantID's own Space ships antelopev2's glintr100.onnx: fetched from /spaces/..., into the path
    the arcface-antelopev2 entry names (the buffalo_l model keeps its own path)."""
    data = _weights(70_000, seed=5)
    with HubServer() as hub:
        hub.state.add("InstantX/InstantID", "models/antelopev2/glintr100.onnx", data)
        r = _cli("models", "fetch", "arcface-antelopev2", "--endpoint", hub.endpoint, "--json")
        heads = [p for m, p, _ in hub.state.requests if m == "HEAD"]
    assert r.returncode == 0, r.stdout + r.stderr
    assert heads == ["/spaces/InstantX/InstantID/resolve/main/models/antelopev2/glintr100.onnx"]
    assert (empty_models_dir / "insightface" / "glintr100.onnx").read_bytes() == data
    assert not (empty_models_dir / "insightface" / "w600k_r50.onnx").exists()


def test_all_for_faces_fetches_the_face_stack(empty_models_dir):
    files = {("public-data/insightface", "models/buffalo_l/det_10g.onnx"): _weights(30_000, seed=6),
             ("public-data/insightface", "models/buffalo_l/w600k_r50.onnx"): _weights(40_000, seed=7),
             ("InstantX/InstantID", "models/antelopev2/glintr100.onnx"): _weights(50_000, seed=8)}
    with HubServer() as hub:
        for (repo, path), data in files.items():
            hub.state.add(repo, path, data)
        r = _cli("models", "fetch", "--all-for", "faces", "--endpoint", hub.endpoint, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert [m["name"] for m in json.loads(r.stdout)["models"]] == ["scrfd", "arcface-buffalo", "arcface-antelopev2"]
    ins = empty_models_dir / "insightface"
    assert (ins / "scrfd_10g_bnkps.onnx").read_bytes() == files[("public-data/insightface", "models/buffalo_l/det_10g.onnx")]
    assert (ins / "w600k_r50.onnx").read_bytes() == files[("public-data/insightface", "models/buffalo_l/w600k_r50.onnx")]
    assert (ins / "glintr100.onnx").read_bytes() == files[("InstantX/InstantID", "models/antelopev2/glintr100.onnx")]
