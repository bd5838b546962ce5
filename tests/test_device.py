"""One device per job: resolved once, handed to every model-backed stage, recorded per
stage in result.json; a GPU that is asked for and not there is a clear error, not a silent CPU run."""

from __future__ import annotations

import pytest
import torch

from portrait.errors import ConfigError
from portrait.models.device import onnx_device, resolve_device
from portrait.jobs import PortraitPipeline, RunConfig


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


def test_a_machine_without_a_gpu_device_node_resolves_the_cpu_without_importing_torch():
    """torch costs a worker 300+ MB; where no GPU can exist (Linux without /dev/nvidia*, /dev/kfd, /dev/dxg)
    the device is known without it."""
    import subprocess
    import sys
    from pathlib import Path

    dev = Path("/dev")
    if not sys.platform.startswith("linux") or any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists() \
            or (dev / "dxg").exists():
        pytest.skip("this machine may have a GPU: torch has to be asked")
    code = ("import sys; from portrait.models.device import resolve_device; "
            "print(resolve_device(None), resolve_device('cpu'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in __import__("os").environ.items() if k != "PORTRAIT_DEVICE"})
    assert out.stdout.split() == ["cpu", "cpu", "False"], out.stderr
