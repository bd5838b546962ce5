"""Multi-face templates with different people: `portrait run --slot N=PHOTOS` (a couple's portrait)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from helpers_photos import hopper_photo_set, sample_photo_set
from portrait.cli import cli
from portrait.imageio import load_rgb
from portrait.templates import load_template


@pytest.fixture(scope="module")
def hopper_photos(tmp_path_factory, grace_hopper):
    return hopper_photo_set(tmp_path_factory, grace_hopper)


@pytest.fixture(scope="module")
def user_photos(tmp_path_factory):
    return sample_photo_set(tmp_path_factory, "user")


@pytest.mark.slow
def test_each_slot_gets_its_own_person(hermetic, user_photos, hopper_photos, face_analysis, astronaut, grace_hopper,
                                       tmp_path):
    # The duo template shows the astronaut (slot 0, left) and Grace Hopper (slot 1, right): swap them.
    res = CliRunner().invoke(cli, ["run", str(user_photos), "--template", "duo", "--slot", f"0={hopper_photos}",
                                   "--out", str(tmp_path), "--upscale", "none", "--variants", "1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)["outputs"][0]
    assert set(out["others"]) == {"0"} and out["others"]["0"] < 0.5
    image = load_rgb(out["file"])
    faces = sorted(face_analysis.analyze(image), key=lambda f: float(f.center[0]))
    slots = load_template("duo").slot_faces()
    left = min(faces, key=lambda f: float(np.linalg.norm(f.center - slots[0].center)))
    right = min(faces, key=lambda f: float(np.linalg.norm(f.center - slots[1].center)))
    astro = face_analysis.analyze(astronaut)[0].embedding
    hopper = face_analysis.analyze(grace_hopper)[0].embedding
    assert face_analysis.distance(left.embedding, hopper) <= 0.5 < 0.6 <= face_analysis.distance(left.embedding, astro)
    assert face_analysis.distance(right.embedding, astro) <= 0.5 < 0.6 <= face_analysis.distance(right.embedding, hopper)
    assert (tmp_path / "preprocess-slot0" / "report.json").is_file()


def test_bad_slot_values_are_clear_errors(hermetic, user_photos, tmp_path):
    runner = CliRunner()
    for value, says in (("x=photos", "expected N=PHOTOS_DIR"), (f"1={tmp_path / 'nope'}", "is not a folder")):
        res = runner.invoke(cli, ["run", str(user_photos), "--template", "duo", "--slot", value,
                                  "--out", str(tmp_path / "o")])
        assert res.exit_code == 2 and says in res.output


@pytest.mark.slow
def test_another_person_with_too_few_photos_stops_before_any_template(hermetic, user_photos, tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    (few / "a.jpg").write_bytes((user_photos / "grace_hopper.jpg").read_bytes())
    res = CliRunner().invoke(cli, ["run", str(user_photos), "--template", "duo", "--slot", f"1={few}",
                                   "--out", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 2
    err = json.loads(res.output)
    assert err["error"] == "not_enough_photos" and str(few) in err["message"]


@pytest.mark.slow
def test_with_diffusion_each_person_is_painted_with_their_own_face_embedding(tiny_models_dir, user_photos,
                                                                               hopper_photos, tmp_path):
    """Tiny random models cannot make a likeness, so this checks the wiring: the embedding each slot is painted
    with (recorded where it enters the UNet) is that slot's person's identity, measured separately from their
    photos; both slots are painted and nothing outside the two face crops changes."""
    from portrait.faces import FaceConfig, get_face_analysis
    from portrait.identity.face_embedding import embed_identity
    from portrait.models import loading
    from portrait.models.manifest import Manifest
    from portrait.jobs import PortraitPipeline, RunConfig

    config = RunConfig(models_dir=str(tiny_models_dir), diffusion="on", steps=4, variants=1, max_tries=1,
                       inpaint_size=96, retouch="none", upscale="none", seed=3)
    pipe = PortraitPipeline(config)
    base = loading.load_base("sd15", manifest=Manifest(tiny_models_dir))  # the cached base the run paints with
    painted: list[np.ndarray] = []

    def record(module, args, kwargs):
        embeds = (kwargs.get("added_cond_kwargs") or {}).get("image_embeds")
        if embeds is not None:  # FaceID's input: (unconditional zeros, the identity) per image
            painted.append(embeds[0].reshape(embeds[0].shape[0], -1)[-1].detach().cpu().numpy())

    hook = base.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        result = pipe.run(user_photos, ["duo"], tmp_path, others={0: hopper_photos})
    finally:
        hook.remove()
    assert not result.failures, result.failures
    fa = get_face_analysis(FaceConfig())
    hopper = embed_identity(hopper_photos, face_analysis=fa).embedding
    user = embed_identity(user_photos, face_analysis=fa).embedding
    # Slots are painted in order (slot 0 = Grace Hopper, slot 1 = the user), each over both passes' steps.
    first, last = painted[0], painted[-1]
    assert np.allclose(painted[: len(painted) // 2], first) and np.allclose(painted[len(painted) // 2:], last)
    for vec, own, other in ((first, hopper, user), (last, user, hopper)):
        assert fa.distance(vec, own) < 0.15 and fa.distance(vec, other) > fa.distance(vec, own) + 0.2
    template = load_template("duo")
    tpl, out = template.image(), load_rgb(result.outputs[0].file)
    assert out.shape == tpl.shape
    yy, xx = np.mgrid[0:tpl.shape[0], 0:tpl.shape[1]]
    outside = np.ones(tpl.shape[:2], bool)
    for face in template.slot_faces().values():
        half = max(face.width, face.height) * 1.75
        inside = (np.abs(xx - face.center[0]) <= half) & (np.abs(yy - face.center[1]) <= half)
        assert np.abs(out[inside].astype(int) - tpl[inside].astype(int)).mean() > 1.0  # this slot was painted
        outside &= ~inside
    assert np.array_equal(out[outside], tpl[outside])
