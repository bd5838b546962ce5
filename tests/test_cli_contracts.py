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
