"""Shared fixtures: real public-domain photos from installed packages, the real face stack.

Area-specific fixtures live in the test modules (or tests/helpers_*.py), not here.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("PORTRAIT_NO_PROGRESS", "1")

# The Hugging Face hub client's own settings: offline mode, another endpoint or a token (a variable, or the
# one `huggingface-cli login` stored under HF_HOME) would change what `models fetch` does and could send a
# developer's token to a test server. Cleared before anything imports huggingface_hub, which reads them once.
HUB_ENVIRONMENT = ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH",
                   "HF_HUB_ENABLE_HF_TRANSFER", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XET_CACHE_DIR")
for _name in HUB_ENVIRONMENT:
    os.environ.pop(_name, None)
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="portrait-tests-hf-home-")  # no stored token, empty cache
atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.submodule_search_locations, f"{module} is not installed (pip install -e .[dev])"
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """NASA portrait of Eileen Collins (public domain), 512x512 RGB."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def grace_hopper_path() -> Path:
    """US Navy portrait of Grace Hopper (public domain), shipped with matplotlib."""
    return _package_dir("matplotlib") / "mpl-data" / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="session")
def grace_hopper(grace_hopper_path) -> np.ndarray:
    from portrait.imageio import load_rgb

    return load_rgb(grace_hopper_path)


@pytest.fixture(scope="session")
def tom_hanks_path() -> Path:
    return _package_dir("insightface") / "data" / "images" / "Tom_Hanks_54745.png"


@pytest.fixture(scope="session")
def group_photo_path() -> Path:
    """insightface's group photo (6+ faces)."""
    return _package_dir("insightface") / "data" / "images" / "t1.jpg"


@pytest.fixture(scope="session")
def face_analysis():
    """The default offline analyser (dlib HOG + dlib's 5 points + ResNet), loaded once per test session."""
    from portrait.faces import FaceConfig, get_face_analysis

    return get_face_analysis(FaceConfig())


@pytest.fixture(scope="session")
def face_analysis68():
    """The same with dlib's 68-point landmarks (dense outline, closer head pose; non-commercial licence)."""
    from portrait.faces import FaceConfig, get_face_analysis

    return get_face_analysis(FaceConfig(landmarks="dlib68"))


@pytest.fixture
def empty_models_dir(tmp_path, monkeypatch) -> Path:
    """A fresh, empty models folder: every user-supplied model is missing."""
    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(d))
    monkeypatch.delenv("PORTRAIT_MODELS_CONFIG", raising=False)
    return d


# The user's environment that changes what the code finds: models, templates, device. No test sees the
# machine's own (a developer's models folder or GPU must not change a result); `hermetic` and the tests
# that build tiny models set their own.
USER_ENVIRONMENT = ("PORTRAIT_MODELS_DIR", "PORTRAIT_MODELS_CONFIG", "PORTRAIT_TEMPLATES_DIR", "PORTRAIT_STYLES_DIR",
                    "PORTRAIT_DEVICE", "PORTRAIT_DTYPE")


@pytest.fixture(scope="session", autouse=True)
def no_user_environment(tmp_path_factory):
    """For the whole session: empty models and templates folders, no device or dtype override."""
    root = tmp_path_factory.mktemp("no-user-env")
    with pytest.MonkeyPatch.context() as mp:
        for name in USER_ENVIRONMENT + tuple(n for n in os.environ if n.startswith("PORTRAIT_")):
            mp.delenv(name, raising=False)  # a developer's own settings (licence, database, storage...) too
        mp.setenv("PORTRAIT_MODELS_DIR", str(root / "models"))
        mp.setenv("PORTRAIT_TEMPLATES_DIR", str(root / "templates"))
        mp.setenv("PORTRAIT_STYLES_DIR", str(root / "styles"))
        yield root


@pytest.fixture(scope="module")
def hermetic(tmp_path_factory) -> Path:
    """No user models, no user templates (bundled templates only), no device override, for a whole module.

    One folder per module, not per test: preprocess keys its worker pool on PORTRAIT_MODELS_DIR, and a
    new folder per test would restart the pool (seconds) every time."""
    root = tmp_path_factory.mktemp("env")
    (root / "models").mkdir()
    (root / "templates").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PORTRAIT_MODELS_DIR", str(root / "models"))
        mp.delenv("PORTRAIT_MODELS_CONFIG", raising=False)
        mp.setenv("PORTRAIT_TEMPLATES_DIR", str(root / "templates"))
        mp.delenv("PORTRAIT_DEVICE", raising=False)
        mp.delenv("PORTRAIT_DTYPE", raising=False)
        yield root


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """Tiny random SD 1.5 + ControlNets + a dlib-sized FaceID adapter, with a models.toml: pass it as
    RunConfig(models_dir=...) and the diffusion stages find them through the manifest like real ones."""
    from portrait.models.tiny import build_tiny_set

    d = tmp_path_factory.mktemp("tiny-models")
    build_tiny_set(d, sdxl=False)
    return d
