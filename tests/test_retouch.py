"""Skin retouch: less high-frequency energy on skin; eyes, brows, lips and hair untouched."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from portrait.errors import ConfigError
from portrait.post import masks, retouch, spandrel_models

from helpers_spandrel import manifest_with, tiny_rrdb


@pytest.fixture(scope="module")
def astro_face(face_analysis, astronaut):
    return face_analysis.analyze(astronaut)[0]


def _hf(rgb, sel):
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(g - cv2.GaussianBlur(g, (0, 0), 1.5))[sel].mean())


# With 68 points the skin mask follows the face outline; with the default 5 points it is an ellipse that
# also takes in some hairline and jaw edge, which the edge-preserving smoothing rightly keeps.
@pytest.mark.parametrize("landmarks,kept", [("dlib68", 0.85), ("dlib5", 0.9)])
def test_classic_smooths_skin_only(astronaut, landmarks, kept):
    from portrait.faces import FaceConfig, get_face_analysis

    astro_face = get_face_analysis(FaceConfig(landmarks=landmarks)).analyze(astronaut)[0]
    skin = masks.skin_mask(astronaut.shape[:2], astro_face)
    inner = cv2.erode(skin, np.ones((7, 7), np.uint8)) > 0
    before = _hf(astronaut, inner)
    half = retouch.retouch(astronaut, astro_face, strength=0.5)
    full = retouch.retouch(astronaut, astro_face, strength=1.0)
    assert _hf(full, inner) < kept * before
    assert _hf(full, inner) < _hf(half, inner) < before
    # Eyes, brows, lips and everything outside the skin mask keep their exact pixels.
    keep = (masks.features_mask(astronaut.shape[:2], astro_face) > 0) | (skin == 0)
    assert np.array_equal(full[keep], astronaut[keep])
    assert np.array_equal(retouch.retouch(astronaut, astro_face, strength=0.0), astronaut)


def test_bad_arguments(astronaut, astro_face):
    with pytest.raises(ConfigError, match="engine"):
        retouch.retouch(astronaut, astro_face, engine="magic")
    with pytest.raises(ConfigError, match="strength"):
        retouch.retouch(astronaut, astro_face, strength=1.5)


@pytest.mark.slow
def test_restore_engine_runs_a_spandrel_model_on_the_aligned_crop(tmp_path, astronaut, astro_face):
    # A 1x RRDB stands in for GFPGAN: same loader, crop, inference and feathered paste-back.
    spandrel_models.clear_cache()
    m = manifest_with(tmp_path, gfpgan=tiny_rrdb(tmp_path / "restore.safetensors", scale=1, num_filters=4))
    out = retouch.retouch(astronaut, astro_face, engine="restore", strength=1.0, manifest=m)
    assert out.shape == astronaut.shape
    face = masks.face_mask(astronaut.shape[:2], astro_face) > 0
    assert np.abs(out[face].astype(int) - astronaut[face]).mean() > 1
    assert np.array_equal(out[~face], astronaut[~face])


def test_restore_engine_missing_weights(empty_models_dir, astronaut, astro_face):
    from portrait.errors import ModelMissingError
    from portrait.models.manifest import Manifest

    with pytest.raises(ModelMissingError, match="gfpgan"):
        retouch.retouch(astronaut, astro_face, engine="restore", manifest=Manifest(empty_models_dir))
