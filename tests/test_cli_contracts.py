"""The CLI's contracts as a new user meets them (issue 8): each test reproduces one defect a user hit
following the README, through the real `portrait` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from portrait.cli import cli
from portrait.templates import load_template


def invoke(*args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)


# -- 3. paths from the environment and the command line are resolved once, against the cwd ------------
def test_relative_models_dir_finds_the_models_its_models_toml_names(tmp_path, monkeypatch):
    """`PORTRAIT_MODELS_DIR=tiny portrait models list` once showed `tiny/tiny/...` and every model missing."""
    (tmp_path / "tiny" / "ip").mkdir(parents=True)
    (tmp_path / "tiny" / "ip" / "faceid.safetensors").write_bytes(b"x")
    (tmp_path / "tiny" / "models.toml").write_text('[models.ip-adapter-faceid]\npath = "ip/faceid.safetensors"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PORTRAIT_MODELS_DIR", "tiny")
    monkeypatch.delenv("PORTRAIT_MODELS_CONFIG", raising=False)
    r = invoke("models", "list", "--json")
    assert r.exit_code == 0, r.output
    listed = json.loads(r.stdout)
    assert listed["models_dir"] == str(tmp_path / "tiny")
    row = next(m for m in listed["models"] if m["name"] == "ip-adapter-faceid")
    assert row["state"] != "missing" and row["path"] == str(tmp_path / "tiny" / "ip" / "faceid.safetensors")


def test_relative_dest_gives_a_template_usable_from_anywhere(hermetic, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    r = invoke("templates", "add", load_template("navy-formal").image_path, "--name", "mine", "--dest", "rel",
               "--json")
    assert r.exit_code == 0, r.output
    added = json.loads(r.stdout)
    assert added["directory"] == str(work / "rel" / "mine") and Path(added["image"]).is_absolute()
    monkeypatch.chdir(tmp_path)  # another folder: the printed path still names the template
    assert load_template(added["directory"]).name == "mine"


# -- 10. `models convert` refuses anything but tensors, and never advises unsafe loading -----------------
def test_convert_refuses_a_file_with_non_tensor_entries_unless_tensors_only(tmp_path):
    import torch
    from safetensors.torch import load_file

    torch.save({"w": torch.ones(2), "epoch": 3, "meta": {"note": "trained", "b": torch.zeros(1)}}, tmp_path / "m.pth")
    r = invoke("models", "convert", tmp_path / "m.pth", tmp_path / "m.safetensors")
    assert r.exit_code == 2 and not (tmp_path / "m.safetensors").exists()
    assert "m.pth" in r.stderr and "epoch" in r.stderr and "meta.note" in r.stderr and "--tensors-only" in r.stderr
    r = invoke("models", "convert", tmp_path / "m.pth", tmp_path / "m.safetensors", "--tensors-only")
    assert r.exit_code == 0, r.output
    assert "dropped 2 entries" in r.stderr and "epoch" in r.stderr and "meta.note" in r.stderr
    assert set(load_file(tmp_path / "m.safetensors")) == {"w", "meta.b"}


class _Exploit:
    def __reduce__(self):  # a malicious checkpoint: code that runs when unpickled
        import os

        return (os.system, ("touch exploited",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_convert_refusal_never_suggests_weights_only_false(tmp_path, monkeypatch, protocol):
    import pickle

    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"weight": _Exploit()}, f, protocol=protocol)
    for extra in ([], ["--json"]):
        r = invoke("models", "convert", tmp_path / "evil.pth", *extra)
        assert r.exit_code == 2 and "evil.pth" in r.output and "refused without running it" in r.output
        assert "weights_only" not in r.output and "trust" not in r.output and "safe_globals" not in r.output
    if protocol == 2:
        assert "posix.system" in r.output or "os.system" in r.output
    assert not (tmp_path / "exploited").exists() and not (tmp_path / "evil.safetensors").exists()
