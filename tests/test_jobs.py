"""portrait.jobs from Python: each job gives what the CLI prints for the same inputs, stops within one
step when cancelled (writing no result file), and a long-lived process keeps one person's identity out
of the next person's job. Real photos, the real face stack, tiny random diffusion models."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from helpers_photos import hopper_photo_set, sample_photo_set
from portrait import jobs
from portrait.cli import cli
from portrait.errors import Cancelled, ConfigError
from portrait.imageio import load_rgb

pytestmark = pytest.mark.usefixtures("hermetic")  # no user models, templates or device (conftest)

CLASSIC = {"variants": 1, "max_tries": 1, "upscale": "none"}
DIFFUSION = {"diffusion": "on", "steps": 4, "variants": 1, "max_tries": 1, "inpaint_size": 64, "retouch": "none",
             "upscale": "none", "seed": 3}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return sample_photo_set(tmp_path_factory, "astronaut")


@pytest.fixture(scope="module")
def hopper_photos(tmp_path_factory, grace_hopper) -> Path:
    return hopper_photo_set(tmp_path_factory, grace_hopper)


@pytest.fixture(scope="module")
def classic_run(photos, tmp_path_factory):
    """jobs.run and `portrait run --json` on the same photos and template."""
    root = tmp_path_factory.mktemp("classic-run")
    result = jobs.run(photos, ["studio-grey"], root / "job", jobs.RunConfig.from_dict(CLASSIC))
    res = CliRunner().invoke(cli, ["run", str(photos), "--template", "studio-grey", "--out", str(root / "cli"),
                                   "--variants", "1", "--max-tries", "1", "--upscale", "none", "--json"])
    assert res.exit_code == 0, res.output
    return result, json.loads(res.output)


def _strip(d: dict, root: Path) -> dict:
    """A result dict with its own output folder and timings taken out (the rest must match)."""
    text = json.dumps(d).replace(str(root), "OUT")
    d = json.loads(text)
    d.pop("timings", None)
    for o in d.get("outputs", []):
        o.pop("timings", None)
    return d


# -- each job from Python gives what the CLI prints --------------------------------------------------
@pytest.mark.slow
def test_run_job_matches_the_cli(classic_run, tmp_path):
    result, printed = classic_run
    job_dir, cli_dir = Path(result.result_file).parent, Path(result.result_file).parent.parent / "cli"
    assert _strip(result.to_dict(), job_dir) == _strip(printed, cli_dir)
    assert json.loads(result.result_file.read_text()) == result.to_dict()
    assert np.array_equal(load_rgb(result.outputs[0].file), load_rgb(printed["outputs"][0]["file"]))


@pytest.mark.slow
def test_preprocess_job_matches_the_cli(photos, tmp_path):
    result = jobs.preprocess(photos, tmp_path / "job")
    res = CliRunner().invoke(cli, ["preprocess", str(photos), "--out", str(tmp_path / "cli"), "--json"])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.output)
    assert result.ok and printed["ok"] and result.message == printed["message"]
    assert _strip(result.to_dict(), tmp_path / "job") == _strip(printed, tmp_path / "cli")
    assert sorted(p.name for p in (tmp_path / "job" / "train").iterdir()) == \
        sorted(p.name for p in (tmp_path / "cli" / "train").iterdir())


@pytest.mark.slow
def test_embed_job_matches_the_cli(classic_run, tmp_path):
    from portrait.identity.face_embedding import FaceIdentity

    trainset = Path(classic_run[0].result_file).parent / "preprocess"
    result = jobs.embed(trainset, tmp_path / "job")
    res = CliRunner().invoke(cli, ["embed", str(trainset), "--out", str(tmp_path / "cli" / "id.safetensors"), "--json"])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.output)
    mine = result.to_dict()
    assert {k: mine[k] for k in ("engine", "dim", "metric", "photos")} == \
        {k: printed[k] for k in ("engine", "dim", "metric", "photos")} == \
        {"engine": "dlib-resnet", "dim": 128, "metric": "l2", "photos": 8}
    assert np.array_equal(FaceIdentity.load(mine["file"]).embedding, FaceIdentity.load(printed["file"]).embedding)
    assert np.array_equal(load_rgb(mine["reference"]), load_rgb(printed["reference"]))


@pytest.mark.slow
def test_embed_job_on_a_raw_folder_selects_first_and_writes_only_under_out_dir(photos, tmp_path):
    before = sorted(p.name for p in photos.iterdir())
    result = jobs.embed(photos, tmp_path / "emb")
    assert result.photos == 8  # the other person and the duplicate are left out by selection
    assert sorted(p.name for p in photos.iterdir()) == before
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == ["identity_embedding.safetensors", "reference.png"]


@pytest.mark.slow
def test_batch_job_matches_the_cli(photos, hopper_photos, tmp_path):
    rows = [{"photos": str(photos), "templates": "studio-grey", "name": "astro"},
            {"photos": str(hopper_photos), "templates": ["studio-grey"], "name": "../hopper"},
            {"photos": str(tmp_path / "missing"), "name": "nobody"}]
    result = jobs.batch(rows, tmp_path / "job", jobs.RunConfig.from_dict(CLASSIC))
    manifest = tmp_path / "m.csv"
    manifest.write_text("photos,templates,name\n" + "\n".join(
        f"{r['photos']},studio-grey,{r['name']}" for r in rows) + "\n")
    res = CliRunner().invoke(cli, ["batch", str(manifest), "--out", str(tmp_path / "cli"), "--variants", "1",
                                   "--max-tries", "1", "--upscale", "none", "--json"])
    printed = json.loads(res.output)
    assert res.exit_code == 1 and [r["status"] for r in result.rows] == [r["status"] for r in printed] == \
        ["done", "done", "failed"]
    assert [r["name"] for r in result.rows] == ["astro", "hopper", "nobody"]
    for mine, theirs in zip(result.rows, printed):
        assert (mine.get("best") or {}).get("distance") == (theirs.get("best") or {}).get("distance")
    assert json.loads((tmp_path / "job" / "batch.json").read_text()) == result.to_dict()["rows"]


def test_configs_from_dict_name_bad_options():
    assert jobs.RunConfig.from_dict({"variants": 2, "face": {"embedder": "dlib-resnet"}}).variants == 2
    for bad, says in (({"bogus": 1}, "unknown option 'bogus'"), ({"variants": "2"}, "'variants' must be an integer"),
                      ({"variants": 5, "max_tries": 2}, "variants (5) cannot exceed max_tries (2)"),
                      ({"face": {"detector": "magic"}}, "detector"), ({"fusion": "paint"}, "'fusion' must be one of"),
                      ({"face": {"nope": 1}}, "unknown option 'face.nope'")):
        with pytest.raises(ConfigError, match=said(says)):
            jobs.RunConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="top_k must be >= 1"):
        jobs.PreprocessConfig.from_dict({"top_k": 0})
    with pytest.raises(ConfigError, match="'engine' must be one of"):
        jobs.GenerateConfig.from_dict({"engine": "paint"})
    with pytest.raises(ConfigError, match="'rank'"):
        jobs.TrainConfig.from_dict({"rank": 0})
    with pytest.raises(ConfigError, match="'embedder'"):
        jobs.EmbedConfig.from_dict({"embedder": "x"})
    with pytest.raises(Exception) as frozen:
        jobs.RunConfig().variants = 3
    assert type(frozen.value).__name__ == "FrozenInstanceError"


def said(text: str) -> str:
    import re

    return re.escape(text)


@pytest.mark.slow
def test_overall_progress_only_moves_forward_and_ends_at_one(photos, tmp_path):
    seen = []
    progress = jobs.OverallProgress("run", on_change=lambda stage, fraction: seen.append((stage, fraction)))
    jobs.run(photos, ["studio-grey", "classic-bw"], tmp_path, jobs.RunConfig.from_dict(CLASSIC), progress=progress)
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert {"intake", "analyse", "select", "crops", "templates"} <= {s for s, _ in seen} <= set(jobs.STAGES)
    assert len(set(fractions)) > 6  # a real bar, not a jump from 0 to 1
    # A stage repeated (the next template's inner steps) never pulls the bar back.
    p = jobs.OverallProgress("run")
    for call in (("templates", 0, 2), ("inpaint 1", 1, 4), ("inpaint 1", 4, 4), ("inpaint 2", 1, 4),
                 ("templates", 1, 2), ("inpaint 1", 1, 4), ("templates", 2, 2)):
        before = p.fraction
        p(*call)
        assert p.fraction >= before
    assert p.fraction == pytest.approx(1.0)


# -- cancellation -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_run_cancelled_during_the_templates_stops_before_the_next_template(photos, tmp_path):
    cancel, events = threading.Event(), []

    def progress(stage, done, total):
        events.append((stage, done, cancel.is_set()))
        if stage == "templates" and done == 0:
            cancel.set()

    with pytest.raises(Cancelled) as err:
        jobs.run(photos, ["studio-grey", "classic-bw"], tmp_path, jobs.RunConfig.from_dict(CLASSIC),
                 progress=progress, cancel=cancel)
    assert err.value.code == "cancelled" and err.value.to_dict()["error"] == "cancelled"
    assert not (tmp_path / "result.json").exists()
    assert not list(tmp_path.glob("*.png"))  # no template was rendered, let alone the next one
    assert [e for e in events if e[2]] == []  # nothing was reported after the cancel


def test_a_run_cancelled_between_photos_writes_no_report(photos, tmp_path):
    cancel = threading.Event()

    def progress(stage, done, total):
        if stage == "intake" and done == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        jobs.run(photos, ["studio-grey"], tmp_path, jobs.RunConfig.from_dict(CLASSIC), progress=progress,
                 cancel=cancel)
    assert not (tmp_path / "preprocess" / "report.json").exists() and not (tmp_path / "result.json").exists()


@pytest.fixture(scope="module")
def tiny_env(tiny_models_dir):
    with pytest.MonkeyPatch.context() as mp:  # the CLI's commands find the tiny models like real ones
        mp.setenv("PORTRAIT_MODELS_DIR", str(tiny_models_dir))
        yield tiny_models_dir


@pytest.fixture(scope="module")
def face_identity(classic_run, tmp_path_factory):
    """The astronaut's face embedding (dlib, 128-d: the tiny FaceID adapter's size) with its reference."""
    out = tmp_path_factory.mktemp("face-identity")
    return jobs.embed(Path(classic_run[0].result_file).parent / "preprocess", out).file


@pytest.mark.slow
def test_generate_job_matches_the_cli_and_stops_within_one_diffusion_step(tiny_env, face_identity, tmp_path):
    config = jobs.GenerateConfig(steps=4, seed=5)
    result = jobs.generate(face_identity, ["studio-grey"], tmp_path / "job", config)
    res = CliRunner().invoke(cli, ["generate", "--identity", str(face_identity), "--template", "studio-grey",
                                   "--out", str(tmp_path / "cli"), "--steps", "4", "--seed", "5", "--json"])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.output)
    assert result.identity_engine == printed["identity_engine"] == "faceid"
    assert np.array_equal(load_rgb(result.outputs[0]["file"]), load_rgb(printed["outputs"][0]["file"]))
    assert _strip(result.to_dict(), tmp_path / "job")["outputs"][0]["controlnets"] == printed["outputs"][0]["controlnets"]

    cancel, steps = threading.Event(), []

    def progress(stage, done, total):
        if stage.startswith("inpaint"):
            steps.append((stage, done))
            cancel.set()

    with pytest.raises(Cancelled):
        jobs.generate(face_identity, ["studio-grey"], tmp_path / "cancelled", config, progress=progress, cancel=cancel)
    assert steps == [("inpaint 1", 1)]  # the first diffusion step was the last
    assert not (tmp_path / "cancelled" / "generate.json").exists()
    assert _identity_free(_unet())  # the identity came off the cached UNet


@pytest.fixture(scope="module")
def trained(tiny_env, classic_run, tmp_path_factory):
    """A 2-step identity LoRA on the tiny base, by the job and by the CLI."""
    trainset = Path(classic_run[0].result_file).parent / "preprocess"
    root = tmp_path_factory.mktemp("train")
    config = jobs.TrainConfig(steps=2, rank=4, alpha=4.0, resolution=64, validate=False)
    result = jobs.train(trainset, root / "job", config)
    res = CliRunner().invoke(cli, ["train", str(trainset), "--base-model", "sd15", "--out", str(root / "cli"),
                                   "--steps", "2", "--rank", "4", "--alpha", "4", "--resolution", "64",
                                   "--no-validate", "--json"])
    assert res.exit_code == 0, res.output
    return trainset, result, json.loads(res.output)


def test_train_job_matches_the_cli(trained):
    from safetensors.torch import load_file

    _, result, printed = trained
    mine = result.to_dict()
    assert {k: mine[k] for k in ("steps", "chosen", "merged", "device")} == \
        {k: printed[k] for k in ("steps", "chosen", "merged", "device")}
    assert [c["eval_loss"] for c in mine["checkpoints"]] == [c["eval_loss"] for c in printed["checkpoints"]]
    a, b = load_file(mine["lora"]), load_file(printed["lora"])
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_train_job_stops_within_one_step(trained, tmp_path):
    trainset = trained[0]
    cancel, steps = threading.Event(), []

    def on_step(step, loss):
        steps.append(step)
        cancel.set()

    with pytest.raises(Cancelled):
        jobs.train(trainset, tmp_path, jobs.TrainConfig(steps=50, rank=4, alpha=4.0, resolution=64, validate=False),
                   cancel=cancel, on_step=on_step)
    assert steps == [1]
    assert not (tmp_path / "training.json").exists() and not (tmp_path / "identity.safetensors").exists()
    assert "portrait_train" not in (getattr(_unet(), "peft_config", None) or {})  # the cached UNet is clean


# -- a long-lived process: one person's identity never reaches the next job ----------------------------
def _unet():
    from portrait.models import loading
    from portrait.models.manifest import get_manifest

    return loading.load_base("sd15", manifest=get_manifest(None)).unet


def _identity_free(unet) -> bool:
    """No identity adapter of any kind on the UNet: no LoRA layers, no IP-Adapter (FaceID / InstantID)."""
    peft = getattr(unet, "peft_config", None) or {}
    return not peft and unet.encoder_hid_proj is None and getattr(unet, "_portrait_ip_adapter", None) is None


@pytest.mark.slow
def test_two_people_in_one_process_each_painted_only_as_themselves(tiny_env, trained, photos, hopper_photos,
                                                                   face_identity, tmp_path):
    from portrait.identity.face_embedding import FaceIdentity

    config = jobs.RunConfig.from_dict(DIFFUSION)
    fed: list = []

    def capture(module, args, kwargs):  # what the UNet is given as image-prompt (face) embeddings
        embeds = (kwargs.get("added_cond_kwargs") or {}).get("image_embeds")
        fed.append(None if embeds is None else embeds[0].detach().reshape(embeds[0].shape[0], -1)[-1].numpy().copy())

    hopper_first = jobs.run(hopper_photos, ["studio-grey"], tmp_path / "hopper-first", config)
    unet = _unet()
    assert _identity_free(unet)
    # The astronaut, painted by her identity LoRA, then by her face embedding (FaceID).
    lora = jobs.run(photos, ["studio-grey"], tmp_path / "astro-lora",
                    jobs.RunConfig.from_dict({**DIFFUSION, "identity": str(trained[1].lora)}))
    assert lora.outputs and "identity LoRA" in {e.stage: e for e in lora.engines}["inpaint"].reason
    assert _identity_free(unet)
    jobs.run(photos, ["studio-grey"], tmp_path / "astro-faceid", config)
    assert _identity_free(unet)

    hook = unet.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        hopper_again = jobs.run(hopper_photos, ["studio-grey"], tmp_path / "hopper-again", config)
    finally:
        hook.remove()
    assert _identity_free(unet)
    hopper_id = jobs.embed(hopper_photos, tmp_path / "hopper-id").file
    astro, hopper = FaceIdentity.load(face_identity).embedding, FaceIdentity.load(hopper_id).embedding
    assert fed and all(v is not None for v in fed)  # every UNet call was given a face embedding...
    for v in fed:  # ...Grace Hopper's, never the astronaut's
        assert np.allclose(v, hopper, atol=1e-5) and not np.allclose(v, astro, atol=0.05)
    # Her portrait after the astronaut's jobs is the one she got before them, pixel for pixel.
    assert np.array_equal(load_rgb(hopper_again.outputs[0].file), load_rgb(hopper_first.outputs[0].file))


RSS_SCRIPT = r"""
import json, resource, sys
from pathlib import Path
from portrait import jobs

def main():
    photos, hopper, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    config = jobs.RunConfig.from_dict(json.loads(sys.argv[4]))
    peaks = []
    for i in range(5):
        jobs.run(photos if i % 2 == 0 else hopper, ["studio-grey"], out / str(i), config)
        peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    print(json.dumps(peaks))

if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
def test_memory_returns_to_a_baseline_over_five_runs(tiny_env, photos, hopper_photos, tmp_path):
    """Five FaceID runs, two people alternating, in one fresh process: nothing is kept per run. Runs 1-2 warm
    up (models load once, both people's buffers, one malloc arena per thread: more on a many-core machine);
    runs 3-5 repeat the same work, so the peak after the fifth stays within 5 % of the peak after the third
    on any machine, while a leak of one run's images or latents would pass it."""
    script = tmp_path / "rss.py"
    script.write_text(RSS_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(photos), str(hopper_photos), str(tmp_path / "out"),
                           json.dumps(DIFFUSION)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    peaks = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(peaks) == 5 and peaks[4] <= 1.05 * peaks[2], peaks
