"""`portrait models convert`: released .pth / .bin weights become safetensors without running pickles."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from portrait.cli import cli
from portrait.errors import ConfigError
from portrait.models.convert import convert_to_safetensors
from helpers_spandrel import tiny_rrdb


def test_gfpgan_style_checkpoint_unwraps_params_ema_and_loads_in_spandrel(tmp_path):
    from portrait.post.spandrel_models import load_image_model, to_rgb, to_tensor

    ref = tiny_rrdb(tmp_path / "rrdb.safetensors")
    state = load_file(ref)
    # How ESRGAN/GFPGAN releases are saved: the EMA weights under "params_ema", beside other sections.
    torch.save({"params_ema": state, "params": {k: v * 0 for k, v in state.items()}}, tmp_path / "release.pth")
    out = convert_to_safetensors(tmp_path / "release.pth")
    assert out == tmp_path / "release.safetensors"
    converted = load_file(out)
    assert converted.keys() == state.keys() and all(torch.equal(converted[k], state[k]) for k in state)
    img = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    a, b = load_image_model(ref), load_image_model(out)
    with torch.no_grad():
        assert np.array_equal(to_rgb(a.model(to_tensor(img, a))), to_rgb(b.model(to_tensor(img, b))))


def test_ip_adapter_bin_sections_flatten_to_dotted_keys(tmp_path):
    g = torch.Generator().manual_seed(0)
    sections = {"image_proj": {"proj.weight": torch.randn(4, 3, generator=g)},
                "ip_adapter": {"1.to_k_ip.weight": torch.randn(2, 2, generator=g)}}
    torch.save(sections, tmp_path / "ip-adapter.bin")
    out = load_file(convert_to_safetensors(tmp_path / "ip-adapter.bin", tmp_path / "x" / "ip.safetensors"))
    assert set(out) == {"image_proj.proj.weight", "ip_adapter.1.to_k_ip.weight"}
    assert torch.equal(out["image_proj.proj.weight"], sections["image_proj"]["proj.weight"])


class _Exploit:
    def __reduce__(self):  # what a malicious checkpoint does: run code when unpickled
        import os

        return (os.system, ("touch exploited",))


def test_a_pickle_that_would_run_code_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"weight": _Exploit()}, f)
    with pytest.raises(ConfigError, match="evil.pth: not a plain PyTorch weights file"):
        convert_to_safetensors(tmp_path / "evil.pth")
    assert not (tmp_path / "exploited").exists()
    assert not (tmp_path / "evil.safetensors").exists()


def test_cli_convert_exit_codes(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    runner = CliRunner()
    res = runner.invoke(cli, ["models", "convert", str(tmp_path / "ok.pth"), str(tmp_path / "ok.safetensors")])
    assert res.exit_code == 0 and "ok.safetensors" in res.output
    assert torch.equal(load_file(tmp_path / "ok.safetensors")["w"], torch.ones(2))
    res = runner.invoke(cli, ["models", "convert", str(tmp_path / "junk.pth"), "--json"])
    assert res.exit_code == 2 and "junk.pth" in res.output
