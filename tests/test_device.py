"""One device per job: resolved once, handed to every model-backed stage, recorded per
stage in result.json; a GPU that is asked for and not there is a clear error, not a silent CPU run."""

from __future__ import annotations

import pytest
import torch

from portrait.errors import ConfigError
from portrait.models.device import onnx_device, resolve_device
from portrait.pipeline import PortraitPipeline, RunConfig


def test_the_device_is_the_best_there_is_unless_asked(monkeypatch):
    monkeypatch.delenv("PORTRAIT_DEVICE", raising=False)
    assert resolve_device(None) == ("cuda" if torch.cuda.is_available() else
                                    "mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setenv("PORTRAIT_DEVICE", "cpu")
    assert resolve_device(None) == "cpu"
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    assert onnx_device("cuda:1") == "cuda" and onnx_device("mps") == "cpu" and onnx_device("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_cuda_device_that_is_not_there_is_refused_by_name():
    with pytest.raises(ConfigError, match="'cuda:0' requested but torch sees no CUDA device"):
        resolve_device("cuda:0")
    with pytest.raises(ConfigError, match="no CUDA device"):
        PortraitPipeline(RunConfig(device="cuda"))


def test_every_stage_says_where_it_runs(hermetic):
    pipe = PortraitPipeline(RunConfig(upscale="classic", retouch="classic", fusion="classic", diffusion="off"))
    devices = {e.stage: e.device for e in pipe.engines}
    assert devices["fusion"] == devices["retouch"] == devices["upscale"] == "cpu"  # numpy / OpenCV engines
    assert devices["inpaint"] == "" or devices["inpaint"] == "cpu"
    assert all("device" in e.to_dict() for e in pipe.engines)
