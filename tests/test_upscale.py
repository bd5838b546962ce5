"""Super-resolution: classic Lanczos + detail, and a random-weight RRDB through spandrel, tiled."""

from __future__ import annotations

import numpy as np
import pytest

from portrait.errors import ConfigError
from portrait.post import spandrel_models, upscale

from helpers_spandrel import manifest_with, tiny_rrdb


def test_classic_doubles_the_size_and_adds_detail(astronaut):
    small = astronaut[::2, ::2].copy()
    out = upscale.upscale(small, scale=2)
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8
    plain = upscale.classic_upscale(small, 2, amount=0)
    lap = lambda x: np.abs(np.diff(x.astype(np.float32), axis=1)).mean()  # noqa: E731
    assert lap(out) > lap(plain)
    assert upscale.upscale(small, 1.5).shape == (384, 384, 3)


def test_bad_arguments(astronaut):
    with pytest.raises(ConfigError, match="engine"):
        upscale.upscale(astronaut, engine="magic")
    with pytest.raises(ConfigError, match="scale"):
        upscale.upscale(astronaut, scale=0)


def test_esrgan_engine_random_rrdb_tiled_equals_untiled(tmp_path, astronaut):
    spandrel_models.clear_cache()
    m = manifest_with(tmp_path, **{"realesrgan-x4": tiny_rrdb(tmp_path / "rrdb.safetensors", scale=2)})
    img = astronaut[100:220, 150:290].copy()  # 120 x 140, not a multiple of the tile
    calls = []
    tiled = upscale.upscale(img, 2, engine="esrgan", manifest=m, tile=48, overlap=24,
                            progress=lambda *a: calls.append(a))
    whole = upscale.upscale(img, 2, engine="esrgan", manifest=m, tile=0)
    assert tiled.shape == whole.shape == (240, 280, 3)
    assert whole.std() > 5, "random model output is degenerate"
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1
    assert calls[-1] == ("upscale", 9, 9)
    # Model cached per (path, device, dtype).
    desc = spandrel_models.load_image_model(m.require("realesrgan-x4"))
    assert desc is spandrel_models.load_image_model(m.require("realesrgan-x4"))
    assert desc.architecture.id == "ESRGAN" and desc.scale == 2
    # A scale other than the network's: its output is resampled.
    assert upscale.upscale(img, 3, engine="esrgan", manifest=m).shape == (360, 420, 3)


def test_esrgan_missing_weights_names_the_model(empty_models_dir, astronaut):
    from portrait.errors import ModelMissingError
    from portrait.models.manifest import Manifest

    with pytest.raises(ModelMissingError, match="realesrgan-x4"):
        upscale.upscale(astronaut, 2, engine="esrgan", manifest=Manifest(empty_models_dir))
