"""The CLI's contracts as a new user meets them: each test reproduces one defect a user hit
following the README, through the real `portrait` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from helpers_photos import small_photo_set
from helpers_faults import break_fusion
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
    r = invoke("templates", "add", "--source", "a test photo", "--licence", "public-domain: test", load_template("navy-formal").image_path, "--name", "mine", "--dest", "rel",
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


# -- shared inputs for the runs below -----------------------------------------------------------------
QUICK = ["--upscale", "none", "--variants", "1", "--max-tries", "1"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return small_photo_set(tmp_path_factory)


def _models_dir(root: Path, tiny: Path, faceid: Path | None = None, controlnets: bool = True) -> Path:
    """A models folder whose models.toml points at the session's tiny SD 1.5 set (optionally another FaceID
    adapter, optionally without the ControlNets)."""
    root.mkdir(parents=True, exist_ok=True)
    entries = {"sd15": tiny / "sd15", "ip-adapter-faceid": faceid or next((tiny / "ip-adapter").glob("*.safetensors"))}
    if controlnets:
        entries.update({f"controlnet-{c}": tiny / "controlnet" / f"sd15-{c}" for c in ("canny", "openpose", "tile",
                                                                                         "color")})
    (root / "models.toml").write_text("".join(f'[models.{k}]\npath = "{v}"\n\n' for k, v in entries.items()))
    return root


# -- 4. `auto` never picks an engine that cannot run with the inputs -------------------------------------
@pytest.mark.slow
def test_auto_falls_back_to_classic_when_the_faceid_adapter_wants_another_embedding(hermetic, tiny_models_dir,
                                                                                       photos, tmp_path, monkeypatch):
    """A 512-d (ArcFace) FaceID adapter with the default 128-d dlib embedder once made auto say
    `inpaint: diffusion`, then every template failed and the run exited 2 with no portrait."""
    from portrait.models import tiny

    faceid = tiny.build_tiny_ip_adapter_faceid(tiny_models_dir / "sd15", tmp_path / "faceid512.safetensors",
                                               id_dim=512)
    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(_models_dir(tmp_path / "models", tiny_models_dir, faceid)))
    r = invoke("run", photos, "--template", "navy-formal", "--out", tmp_path / "auto", *QUICK)
    assert r.exit_code == 0, r.output
    line = next(x for x in r.stdout.splitlines() if x.startswith("inpaint:"))
    assert line.startswith("inpaint: skipped") and "512-d" in line and "--embedder arcface" in line, line
    assert (tmp_path / "auto" / "navy-formal.png").is_file()
    r = invoke("run", photos, "--template", "navy-formal", "--out", tmp_path / "on", "--diffusion", "on", *QUICK)
    assert r.exit_code == 2 and "512-d" in r.stderr and "--embedder arcface" in r.stderr
    assert not (tmp_path / "on").exists()  # refused before any photo was read


def test_auto_skips_diffusion_when_the_templates_controlnets_are_missing(hermetic, tiny_models_dir, photos, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(_models_dir(tmp_path / "models", tiny_models_dir,
                                                              controlnets=False)))
    r = invoke("run", photos, "--template", "navy-formal", "--out", tmp_path / "auto", "--json", *QUICK)
    assert r.exit_code == 0, r.output
    inpaint = json.loads(r.stdout)["engines"]["inpaint"]
    assert inpaint["engine"] == "skipped" and "controlnet-canny" in inpaint["reason"], inpaint
    r = invoke("run", photos, "--template", "navy-formal", "--out", tmp_path / "on", "--diffusion", "on", "--json",
               *QUICK)
    assert r.exit_code == 2 and json.loads(r.stdout)["error"] == "model_missing" and "controlnet-" in r.stdout
    assert not (tmp_path / "on").exists()


# -- 5, 7, 12, 13. checked before any photo is processed -------------------------------------------------
def test_slot_outside_the_templates_slots_is_an_error_before_preprocessing(hermetic, photos, tmp_path):
    r = invoke("run", photos, "--template", "navy-formal", "--slot", f"1={photos}", "--out", tmp_path / "o")
    assert r.exit_code == 2, r.output
    assert "--slot 1" in r.stderr and "navy-formal: 0" in r.stderr
    assert not (tmp_path / "o").exists()
    r = invoke("run", photos, "--template", "duo", "--template", "navy-formal", "--slot", f"2={photos}", "--out",
               tmp_path / "o", "--json")
    assert r.exit_code == 2 and "duo: 0, 1" in json.loads(r.stdout)["message"] and not (tmp_path / "o").exists()


def test_top_k_has_one_range_everywhere(hermetic, photos, tmp_path):
    for cmd in (["run", photos, "--template", "no-such-template"], ["batch", tmp_path / "none.csv"],
                ["preprocess", photos]):
        (tmp_path / "none.csv").write_text("photos\n")
        r = invoke(*cmd, "--out", tmp_path / "o", "--top-k", "101")
        assert r.exit_code == 2 and "1<=x<=100" in r.stderr, (cmd[0], r.output)
    r = invoke("run", photos, "--template", "no-such-template", "--top-k", "100", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "no-such-template" in r.stderr and "--top-k" not in r.stderr


@pytest.mark.slow
def test_run_takes_a_template_image_path(hermetic, photos, tmp_path, grace_hopper_path):
    out = tmp_path / "out"
    r = invoke("run", photos, "--template", grace_hopper_path, "--out", out, "--json", *QUICK)
    assert r.exit_code == 0, r.output
    (o,) = json.loads(r.stdout)["outputs"]
    assert o["template"] == "grace_hopper" and Path(o["file"]) == out / "grace_hopper.png"
    assert not (grace_hopper_path.parent / ".faces.json").exists()  # nothing written beside the user's image
    r = invoke("run", photos, "--template", tmp_path / "missing.jpg", "--out", tmp_path / "o2")
    assert r.exit_code == 2 and "missing.jpg" in r.stderr and "available templates:" in r.stderr


def test_generate_checks_its_templates_before_reading_the_reference(hermetic, tiny_models_dir, tmp_path, monkeypatch):
    from portrait.identity.face_embedding import FaceIdentity

    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(_models_dir(tmp_path / "models", tiny_models_dir)))
    ident = FaceIdentity.from_vectors([np.ones(128, np.float32)], ["a.png"], "dlib-resnet", "l2")
    path = ident.save(tmp_path / "id" / "identity_embedding.safetensors")  # no reference.png beside it
    r = invoke("generate", "--identity", path, "--template", "no-such-template", "--out", tmp_path / "gen", "--json")
    assert r.exit_code == 2, r.output
    err = json.loads(r.stdout)
    assert err["error"] == "bad_template" and "no-such-template" in err["message"]
    assert "available templates:" in err["message"] and "navy-formal" in err["message"]


# -- 2. the README's train → generate flow, as written, on the tiny models --------------------------------
@pytest.mark.slow
def test_readme_train_then_generate_works_as_written(hermetic, tiny_models_dir, photos, tmp_path, monkeypatch):
    """`portrait train out/preprocess --base-model sd15 --out out/lora` then `portrait generate --identity
    out/lora/identity.safetensors --template navy-formal --out out/gen` once failed: no reference.png."""
    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(_models_dir(tmp_path / "models", tiny_models_dir)))
    monkeypatch.chdir(tmp_path)
    r = invoke("preprocess", photos, "--out", "out/preprocess")
    assert r.exit_code == 0, r.output
    r = invoke("train", "out/preprocess", "--base-model", "sd15", "--out", "out/lora",
               "--steps", "2", "--rank", "2", "--alpha", "2", "--resolution", "64", "--no-validate")
    assert r.exit_code == 0, r.output
    reference = tmp_path / "out" / "lora" / "reference.png"
    assert reference.is_file() and "reference:" in r.stdout
    report = json.loads((tmp_path / "out" / "preprocess" / "report.json").read_text())
    crop = next(p["crop"] for p in report["photos"] if p["file"] == report["reference"])
    assert reference.read_bytes() == (tmp_path / "out" / "preprocess" / "train" / crop).read_bytes()
    r = invoke("generate", "--identity", "out/lora/identity.safetensors", "--template", "navy-formal",
               "--out", "out/gen", "--steps", "4")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "out" / "gen" / "generate.json").read_text())
    assert summary["reference"] == str(reference) and summary["identity_kind"] == "lora"
    (written,) = summary["outputs"]
    assert Path(written["file"]).is_file() and written["template"] == "navy-formal"


# -- 6. batch: names confined to --out, truthful row status, exit codes --------------------------------------
@pytest.mark.slow
def test_batch_row_names_cannot_leave_out_and_statuses_tell_the_truth(hermetic, photos, tmp_path, monkeypatch):
    """A CSV name `../escaped` once wrote outside --out; a row whose only template did not exist said `done`
    with 0 outputs; the exit code was 0 with failing rows."""
    break_fusion(monkeypatch, narrower_than=500)
    out = tmp_path / "studio" / "out"
    manifest = tmp_path / "studio" / "customers.csv"
    manifest.parent.mkdir()
    abs_name = str(tmp_path / "elsewhere")
    manifest.write_text("photos,templates,name\n"
                        f"{photos},navy-formal;studio-grey,../escaped\n"
                        f"{photos},navy-formal,{abs_name}\n"
                        f"{photos},no-such-template,bad\x00name\n"
                        f"{photos},navy-formal,..\n", encoding="utf-8")
    r = invoke("batch", manifest, "--out", out, "--json", *QUICK)
    assert r.exit_code == 1, r.output  # some rows failed, some gave portraits
    rows = json.loads(r.stdout)
    assert rows == json.loads((out / "batch.json").read_text())
    assert [e["status"] for e in rows] == ["partial", "done", "failed", "done"]
    names = [e["name"] for e in rows]
    assert names[0] == "escaped" and names[2] == "bad_name" and names[3].startswith("row")
    assert "/" not in "".join(names) and "\x00" not in "".join(names) and len(set(names)) == 4
    assert [e.get("given_name") for e in rows] == ["../escaped", abs_name, "bad\x00name", ".."]
    # Every file the batch wrote is inside --out; nothing beside it, nothing at the absolute name.
    assert sorted(p.name for p in (tmp_path / "studio").iterdir()) == ["customers.csv", "out"]
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "escaped").exists()
    assert (out / names[0] / "navy-formal.png").is_file() and (out / names[1] / "navy-formal.png").is_file()
    assert rows[0]["outputs"] == 1 and rows[0]["failures"] == 1 and rows[0]["failed_templates"] == ["studio-grey"]
    assert rows[2]["error"] == "bad_template" and "no-such-template" in rows[2]["message"]
    assert "available templates:" in rows[2]["message"] and not (out / "bad_name").exists()  # never started


def test_batch_status_and_exit_code_rules():
    from portrait.batch import exit_code, row_dir, row_status, safe_name, unique_names

    assert [row_status(o, f) for o, f in ((2, 0), (1, 1), (0, 2), (0, 0))] == ["done", "partial", "failed", "failed"]
    assert exit_code(["done", "done"]) == 0
    assert exit_code(["done", "partial"]) == 1 and exit_code(["failed", "partial"]) == 1
    assert exit_code(["failed", "failed"]) == 2
    assert safe_name("../x", 1) == "x" and safe_name("/abs/path", 2) == "abs_path" and safe_name("a\x00b", 3) == "a_b"
    assert safe_name("..", 4) == "row004" and safe_name("", 5) == "row005" and len(safe_name("n" * 300, 6)) == 64
    assert unique_names(["a", "A", "a"]) == ["a", "A-2", "a-3"]
    with pytest.raises(Exception, match="not a plain folder name"):
        row_dir("/tmp/out", "../x")


# -- 8. --dtype on run and generate, as the README says -------------------------------------------------------
@pytest.mark.slow
def test_dtype_reaches_the_diffusion_weights(hermetic, tiny_models_dir, photos, tmp_path, monkeypatch):
    import torch

    from portrait.models import loading

    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(_models_dir(tmp_path / "models", tiny_models_dir)))
    loading.clear_cache()
    r = invoke("run", photos, "--template", "navy-formal", "--out", tmp_path / "o", "--dtype", "bf16", "--steps", "4",
               "--inpaint-size", "64", "--retouch", "none", "--json", *QUICK)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["engines"]["inpaint"]["engine"] == "diffusion"
    bases = [p for k, p in loading._CACHE.items() if k[0] == "base"]
    assert bases and all(p.unet.dtype == torch.bfloat16 for p in bases), [(k, p.dtype) for k, p in
                                                                           loading._CACHE.items()]
    loading.clear_cache()
    for cmd in (["run", photos, "--template", "navy-formal"], ["generate", "--identity", photos, "--template", "x"]):
        r = invoke(*cmd, "--out", tmp_path / "o2", "--dtype", "fp7")
        assert r.exit_code == 2 and "'fp7' is not one of 'fp32', 'fp16', 'bf16'" in r.stderr, r.output


# -- 9. messages ------------------------------------------------------------------------------------------------
def test_models_list_hints_survive_rich_and_do_not_point_at_themselves(hermetic, tmp_path, monkeypatch):
    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(tmp_path / "empty"))
    r = invoke("models", "list")
    assert r.exit_code == 0, r.output
    assert '[models.sd15] path = "..."' in r.stdout and '[models.gfpgan] path = "..."' in r.stdout
    assert "portrait models list" not in r.stdout
    # Piped, the table is one plain line per model: nothing cut, no box drawing.
    line = next(x for x in r.stdout.splitlines() if x.startswith("controlnet-openpose-sdxl "))
    assert str(tmp_path / "empty" / "controlnet" / "sdxl-openpose") in line and "missing" in line
    assert "│" not in r.stdout and "┃" not in r.stdout


def test_verify_with_no_user_models_checks_only_the_shipped_ones(hermetic, tmp_path, monkeypatch):
    from portrait.models.manifest import BUILTIN

    shipped = [m.name for m in BUILTIN if m.bundled and m.sha256]  # MediaPipe's files, inside portrait
    assert set(shipped) == {"mediapipe-face-mesh", "mediapipe-selfie-segmentation"}
    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(tmp_path / "empty"))
    r = invoke("models", "verify")
    assert r.exit_code == 0 and f"{len(shipped)} model(s) match their sha256" in r.stderr, r.stderr
    r = invoke("models", "verify", "--json")
    assert json.loads(r.stdout)["verified"] == len(shipped)
    r = invoke("models", "verify", "sd15")
    assert r.exit_code == 2 and "1 problem(s): sd15" in r.stderr


@pytest.mark.slow
def test_library_warnings_stay_out_of_the_cli_unless_verbose(hermetic, tiny_models_dir, photos, tmp_path):
    """A real process (the libraries log to the stderr they found at import): a tiny diffusion run prints
    diffusers' and transformers' warnings only with --verbose."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PORTRAIT_MODELS_DIR=str(_models_dir(tmp_path / "models", tiny_models_dir)),
               PORTRAIT_NO_PROGRESS="1")
    base = [sys.executable, "-c", "from portrait.cli import main; main()", "run", str(photos), "--template",
            "navy-formal", "--steps", "4", "--inpaint-size", "64", "--retouch", "none", "--diffusion", "on", *QUICK]
    procs = [subprocess.Popen([*base, "--out", str(tmp_path / name), *extra], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for name, extra in (("q", []), ("v", ["--verbose"]))]

    def finish(p):  # both run at once; a process blocked on a full pipe just waits its turn
        out, err = p.communicate(timeout=600)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)

    quiet, loud = (finish(p) for p in procs)
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr[-3000:] + loud.stderr[-3000:]
    assert "inpaint: diffusion" in quiet.stdout
    assert loud.stderr.strip(), "the run printed no library warning at all: this test proves nothing"
    assert quiet.stderr.strip() == "", quiet.stderr


def test_an_identity_lora_for_another_architecture_is_not_picked(hermetic, tiny_models_dir, photos, tmp_path,
                                                                 monkeypatch):
    """An SDXL-sized LoRA (2048-d text tokens) on the tiny SD 1.5 base: auto skips diffusion saying why;
    --diffusion on refuses before any photo is read."""
    import torch
    from safetensors.torch import save_file

    from portrait.engines import choose_diffusion
    from portrait.models.manifest import Manifest

    lora = tmp_path / "sdxl_identity.safetensors"
    save_file({"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": torch.zeros(2, 2048),
               "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": torch.zeros(32, 2)},
              str(lora))
    models = _models_dir(tmp_path / "models", tiny_models_dir)
    auto = choose_diffusion("auto", Manifest(models), None, str(lora))
    assert auto.engine == "skipped" and "2048-d" in auto.reason, auto
    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(models))
    r = invoke("run", photos, "--template", "navy-formal", "--identity", lora, "--diffusion", "on",
               "--out", tmp_path / "o")
    assert r.exit_code == 2 and "2048-d" in r.stderr and str(lora) in r.stderr, r.output
    assert not (tmp_path / "o").exists()
