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
