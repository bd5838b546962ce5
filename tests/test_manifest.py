"""The model manifest: bundled files resolve, missing ones say what to do, hashes are checked."""

from __future__ import annotations

import hashlib

import pytest

from portrait.errors import ConfigError, ModelHashError, ModelMissingError
from portrait.models.manifest import Manifest


def test_bundled_dlib_models_are_present_and_licences_recorded(empty_models_dir):
    m = Manifest(empty_models_dir)
    for name in ("dlib-5pt", "dlib-68pt", "dlib-resnet"):
        assert m.require(name).is_file()
    assert m.spec("dlib-68pt").commercial_use is False
    assert m.spec("dlib-5pt").commercial_use is True


def test_missing_model_error_names_model_path_and_fix(empty_models_dir):
    m = Manifest(empty_models_dir)
    with pytest.raises(ModelMissingError) as exc:
        m.require("arcface")
    msg = str(exc.value)
    assert "arcface" in msg and str(empty_models_dir / "insightface" / "w600k_r50.onnx") in msg
    assert "models.toml" in msg and "buffalo_l" in msg


def test_models_toml_overrides_path_and_hash(empty_models_dir, tmp_path):
    weights = tmp_path / "elsewhere.onnx"
    weights.write_bytes(b"not really onnx, but hashed")
    good = hashlib.sha256(weights.read_bytes()).hexdigest()
    (empty_models_dir / "models.toml").write_text(f'[models.arcface]\npath = "{weights}"\nsha256 = "{good}"\n')
    assert Manifest(empty_models_dir).require("arcface") == weights
    (empty_models_dir / "models.toml").write_text(f'[models.arcface]\npath = "{weights}"\nsha256 = "{"0" * 64}"\n')
    with pytest.raises(ModelHashError, match="arcface"):
        Manifest(empty_models_dir).require("arcface")


def test_models_toml_adds_a_model_and_rejects_nonsense(empty_models_dir):
    (empty_models_dir / "models.toml").write_text('[models.my-style]\nkind = "lora"\npath = "loras/film.safetensors"\n')
    m = Manifest(empty_models_dir)
    assert m.path("my-style") == empty_models_dir / "loras" / "film.safetensors"
    assert m.status("my-style").state == "missing"
    (empty_models_dir / "models.toml").write_text('[models.arcface]\npaht = "typo"\n')
    with pytest.raises(ConfigError, match="paht"):
        Manifest(empty_models_dir)
    (empty_models_dir / "models.toml").write_text('[models.x]\nkind = "toaster"\npath = "x"\n')
    with pytest.raises(ConfigError, match="kind"):
        Manifest(empty_models_dir)


def test_folder_models_need_their_required_members(empty_models_dir):
    (empty_models_dir / "diffusion" / "sd15").mkdir(parents=True)
    m = Manifest(empty_models_dir)
    st = m.status("sd15")
    assert st.state == "missing" and "model_index.json" in st.message
    with pytest.raises(ModelMissingError, match="model_index.json"):
        m.require("sd15")


def _cli(*args):
    from click.testing import CliRunner

    from portrait.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_every_downloadable_model_lists_its_source_size_and_licence(empty_models_dir):
    import json

    r = _cli("models", "list", "--json")
    assert r.exit_code == 0
    rows = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    for name, row in rows.items():
        assert row["licence"] and row["commercial_use"] in ("yes", "no", "check")
        if row["pin"] == "bundled":
            continue
        src = row["source"]
        assert row["size"], name  # every model has a release with a known size
        if src["automatic"]:  # a Hub repo, a revision and exact file names
            assert src["repo"] and src["revision"] and src["files"] and all(f["path"] for f in src["files"])
            assert row["pin"] == "pinned" or row["pin"].startswith("missing")
        else:
            assert src["steps"], name  # manual: what to do by hand
    assert rows["sd15"]["pin"] == "pinned"
    unet = next(f for f in rows["sd15"]["source"]["files"] if f["path"] == "unet/diffusion_pytorch_model.safetensors")
    assert unet["sha256"] == "19da7aaa4b880e59d56843f1fcb4dd9b599c28a1d9d9af7c1143057c8ffae9f1"
    assert rows["arcface-antelopev2"]["source"]["files"][0]["path"] == "models/antelopev2/glintr100.onnx"
    assert rows["arcface-buffalo"]["source"]["files"][0]["path"] == "models/buffalo_l/w600k_r50.onnx"


def test_a_folder_you_placed_yourself_is_unchecked_not_refused(empty_models_dir):
    """Hashes recorded for the released files identify what `models fetch` installs; your own SD 1.5
    fine-tune at the same path is another model, not a corrupt one (its required members are the check)."""
    import json

    sd15 = empty_models_dir / "diffusion" / "sd15"
    (sd15 / "unet").mkdir(parents=True)
    (sd15 / "model_index.json").write_text("{}")
    (sd15 / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"my own fine-tune")
    r = _cli("models", "verify", "sd15", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["models"][0]["state"] == "present"
    assert Manifest(empty_models_dir).require("sd15") == sd15


def test_old_arcface_name_is_an_alias_of_arcface_buffalo(empty_models_dir, tmp_path):
    weights = tmp_path / "w600k_r50.onnx"
    weights.write_bytes(b"onnx bytes")
    (empty_models_dir / "models.toml").write_text(f'[models.arcface]\npath = "{weights}"\n')
    m = Manifest(empty_models_dir)
    assert m.require("arcface-buffalo") == weights == m.require("arcface")
    assert m.spec("arcface").name == "arcface-buffalo" and "arcface" in m
    assert any("arcface-antelopev2" in n for n in m.notes)  # the deprecation note names both new models
    assert m.path("arcface-antelopev2") == empty_models_dir / "insightface" / "glintr100.onnx"
