"""The whole offline chain (PortraitPipeline): likeness by the real dlib model, result.json contract,
pixels outside the face region, retouch confined to the skin, the likeness bar's retries.

Person A = the NASA astronaut (the sample photos), person B = Grace Hopper (the navy-formal template).
Every likeness figure is measured here again from the written PNG, not taken from the pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers_photos import SMALL_SET, sample_photo_set, small_photo_set
from helpers_faults import break_fusion
from portrait.imageio import load_rgb
from portrait.jobs import PortraitPipeline, RunConfig
from portrait.post import masks
from portrait.post.upscale import upscale
from portrait.templates import load_template

@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    return sample_photo_set(tmp_path_factory, "samples")


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory, sample_dir) -> Path:
    """Five astronaut photos (no large one): a quick preprocess for runs that test mechanics."""
    return small_photo_set(tmp_path_factory, sample_dir)


@pytest.fixture(scope="module")
def user_embeddings(sample_dir, face_analysis) -> np.ndarray:
    """Person A's embeddings, measured here from every astronaut sample photo (EXIF applied)."""
    embs = []
    for p in sorted(sample_dir.glob("astronaut_*")):
        faces = face_analysis.analyze(load_rgb(p))
        assert faces, p
        embs.append(max(faces, key=lambda f: f.size).embedding)
    return np.stack(embs)


@pytest.fixture(scope="module")
def full_run(hermetic, sample_dir, tmp_path_factory):
    """`portrait run` on the sample photos × navy-formal + studio-grey, defaults (classic 2x upscale)."""
    out = tmp_path_factory.mktemp("run")
    config = RunConfig(models_dir=str(hermetic / "models"))
    seen: list[tuple] = []
    result = PortraitPipeline(config, progress=lambda s, d, t: seen.append((s, d, t))).run(
        sample_dir, ["navy-formal", "studio-grey"], out)
    return result, out, seen


def _face(face_analysis, path: Path):
    faces = face_analysis.analyze(load_rgb(path))
    assert len(faces) == 1, f"{path}: expected one face in the output, found {len(faces)}"
    return faces[0]


@pytest.mark.slow
def test_another_persons_template_gets_the_users_face(full_run, face_analysis, astronaut, grace_hopper,
                                                      user_embeddings):
    result, out, _ = full_run
    navy = next(o for o in result.outputs if o.template == "navy-formal")
    assert Path(navy.file) == out / "navy-formal.png" and Path(navy.file).is_file()
    face = _face(face_analysis, Path(navy.file))
    a = face_analysis.analyze(astronaut)[0].embedding
    b = face_analysis.analyze(grace_hopper)[0].embedding
    tmpl_face = face_analysis.analyze(load_template("navy-formal").image())[0].embedding
    centroid = user_embeddings.mean(0)
    to_user, to_centroid = face_analysis.distance(face.embedding, a), face_analysis.distance(face.embedding, centroid)
    to_b, to_tmpl = face_analysis.distance(face.embedding, b), face_analysis.distance(face.embedding, tmpl_face)
    assert to_user <= 0.5 and to_centroid <= 0.5, (to_user, to_centroid)
    assert to_b >= 0.6 and to_tmpl >= 0.6, (to_b, to_tmpl)
    # The template really is person B, and A and B really are different people.
    assert face_analysis.distance(tmpl_face, b) < 0.3 < 0.6 < face_analysis.distance(a, b)
    # The pipeline's own score is the same measurement (its centroid is robust, ours a plain mean).
    assert navy.distance == pytest.approx(to_centroid, abs=0.08)
    assert navy.passed_bar and navy.distance <= 0.6


def test_output_size_is_template_times_upscale(full_run):
    result, _, _ = full_run
    for o in result.outputs:
        h, w = load_template(o.template).image().shape[:2]
        assert load_rgb(o.file).shape == (2 * h, 2 * w, 3), o.template


def test_pixels_outside_face_are_the_upscaled_template(full_run, face_analysis):
    """Outside the dilated face region the backdrop is exactly the template through the same upscale (the
    template's skin there takes the user's tone: tests/test_tone.py)."""
    from portrait.post.fusion import BACKDROP
    from portrait.post.segmentation import person_alpha

    result, _, _ = full_run
    for o in result.outputs:
        tmpl = load_template(o.template)
        img = tmpl.image()
        face = tmpl.slot_faces(face_analysis)[0]
        region = masks.dilate(masks.face_mask(img.shape[:2], face), int(face.eye_distance * 0.25))
        out = load_rgb(o.file)
        region = masks.dilate(cv2.resize(region, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_NEAREST), 8)
        expected = upscale(img, 2.0, engine="classic")
        backdrop = cv2.resize((person_alpha(img) < BACKDROP).astype(np.uint8), (out.shape[1], out.shape[0]),
                              interpolation=cv2.INTER_NEAREST) > 0
        backdrop &= ~(masks.dilate(np.uint8(~backdrop) * 255, 8) > 0)  # away from the person's edge
        outside = (region == 0) & backdrop
        assert outside.mean() > 0.3
        assert np.array_equal(out[outside], expected[outside]), o.template
        outside = region == 0
        inside_changed = np.any(out != expected, axis=2)[~outside].mean()
        assert inside_changed > 0.2, f"{o.template}: the face region barely changed ({inside_changed:.2f})"


def test_result_json_ranks_by_likeness_with_scores_and_engines(full_run):
    result, out, seen = full_run
    assert result.result_file == out / "result.json"
    data = json.loads(result.result_file.read_text())
    assert data == json.loads(json.dumps(result.to_dict()))
    outs = data["outputs"]
    assert [o["template"] for o in outs] == [o.template for o in result.outputs]
    assert sorted(o["template"] for o in outs) == ["navy-formal", "studio-grey"]
    dists = [o["distance"] for o in outs]
    assert dists == sorted(dists)
    sims = [o["similarity"] for o in outs]
    assert sims == sorted(sims, reverse=True)
    thr = data["likeness"]["same_person_threshold"]
    assert data["likeness"]["metric"] == "l2" and thr == 0.6
    for o in outs:
        assert 0 <= o["distance"] and 0 <= o["similarity"] <= 1
        assert o["similarity"] == pytest.approx(1 - o["distance"] / (2 * thr), abs=1e-3)
        assert o["passed_bar"] == (o["distance"] <= thr)
        assert o["variants_tried"] == 2  # --variants 2 and the first two already pass the bar
        assert o["reference"] in data["preprocess"]["selected"]
        assert set(o["timings"]) == {"fusion", "retouch", "upscale", "rank"}
    eng = data["engines"]
    # Each stage records where it ran (the classic engines are numpy / OpenCV: the CPU).
    assert eng["fusion"] == {"stage": "fusion", "engine": "classic", "reason": "no inswapper model", "device": "cpu"}
    assert eng["inpaint"]["engine"] == "skipped" and "no base model" in eng["inpaint"]["reason"]
    assert eng["inpaint"]["device"] == ""
    assert eng["retouch"] == {"stage": "retouch", "engine": "classic", "reason": "no gfpgan model", "device": "cpu"}
    assert eng["upscale"] == {"stage": "upscale", "engine": "classic", "reason": "no Real-ESRGAN model", "device": "cpu"}
    assert "dlib-resnet" in eng["faces"]["engine"]
    t = data["timings"]
    assert t["preprocess"] > 0 and t["total"] >= t["preprocess"]
    for name in ("navy-formal", "studio-grey"):
        assert {f"{name}.{k}" for k in ("fusion", "retouch", "upscale", "rank")} <= set(t)
    pre = data["preprocess"]
    assert pre["accepted"] == 8 and "grace_hopper.jpg" not in pre["selected"]
    assert Path(pre["report"]).is_file()
    assert data["failures"] == []
    stages = {s for s, _, _ in seen}
    assert {"templates", "upscale"} <= stages
    assert ("templates", 2, 2) in seen


def test_engines_with_empty_models_dir(empty_models_dir):
    """With the env's models folder empty every model-backed stage falls back, and says why."""
    pipe = PortraitPipeline(RunConfig(upscale_factor=1.0))
    got = {e.stage: (e.engine, e.reason) for e in pipe.engines}
    assert got["fusion"] == ("classic", "no inswapper model")
    assert got["inpaint"][0] == "skipped" and got["inpaint"][1].startswith("no base model")
    assert got["retouch"] == ("classic", "no gfpgan model")
    assert got["upscale"] == ("skipped", "factor 1")
    assert pipe.manifest.models_dir == empty_models_dir


def _render(small_dir, out, **kw) -> tuple:
    config = RunConfig(upscale="none", variants=1, max_tries=1, **kw)
    result = PortraitPipeline(config).run(small_dir, ["navy-formal"], out)
    assert not result.failures and len(result.outputs) == 1
    return result.outputs[0], load_rgb(result.outputs[0].file)


def test_fringe_cut_reaches_the_fusion_and_keep_is_the_default(hermetic, small_dir, tmp_path):
    """`portrait run --fringe cut` leaves the sample user's fringe out: more of the template's own forehead
    stays as it was than with the default, which pastes her fringe with her face."""
    img = load_template("navy-formal").image()
    _, kept = _render(small_dir, tmp_path / "keep", retouch="none")
    _, cut = _render(small_dir, tmp_path / "cut", retouch="none", fringe="cut")
    untouched = lambda out: int(np.count_nonzero(np.all(out == img, axis=-1)))  # noqa: E731
    assert untouched(cut) > untouched(kept) + 500, (untouched(cut), untouched(kept))


@pytest.mark.slow
def test_upscale_none_changes_only_the_face_region_and_retouch_only_the_skin(hermetic, small_dir, tmp_path,
                                                                             face_analysis):
    tmpl = load_template("navy-formal")
    img = tmpl.image()
    face = tmpl.slot_faces(face_analysis)[0]
    plain_out, plain = _render(small_dir, tmp_path / "plain", retouch="none")
    smooth_out, smooth = _render(small_dir, tmp_path / "smooth", retouch="classic", retouch_strength=0.8)
    assert plain_out.reference == smooth_out.reference
    assert plain.shape == smooth.shape == img.shape
    assert "upscale" not in plain_out.timings and "retouch" not in plain_out.timings
    # Fusion with --skin template: outside the face region dilated by a quarter of the eye distance, exactly
    # the template (with --skin user, the default, the template's skin there takes the user's tone).
    region = masks.dilate(masks.face_mask(img.shape[:2], face), int(face.eye_distance * 0.25))
    _, kept = _render(small_dir, tmp_path / "kept", retouch="none", skin="template")
    changed = np.any(kept != img, axis=2)
    assert not changed[region == 0].any(), f"{int(changed[region == 0].sum())} pixels changed outside the face"
    assert changed[region > 0].mean() > 0.2
    assert np.any(plain != kept)
    # Retouch: only on the template face's skin mask; eyes, brows and lips untouched.
    retouched = np.any(smooth != plain, axis=2)
    skin = masks.skin_mask(img.shape[:2], face) > 0
    features = masks.features_mask(img.shape[:2], face) > 0
    assert retouched.any() and retouched[skin].mean() > 0.2
    assert not retouched[~skin].any()
    assert not retouched[features].any()


@pytest.mark.slow
@pytest.mark.parametrize("max_tries", [3, 10])
def test_strict_likeness_bar_tries_every_variant_and_flags(hermetic, small_dir, tmp_path, max_tries):
    config = RunConfig(upscale="none", retouch="none", variants=1, max_tries=max_tries, likeness_bar=0.01)
    result = PortraitPipeline(config).run(small_dir, ["navy-formal"], tmp_path)
    refs = len(result.preprocess["selected"])
    assert refs == len(SMALL_SET)
    (o,) = result.outputs
    assert o.variants_tried == min(max_tries, refs)
    assert o.passed_bar is False and o.distance > 0.01
    data = json.loads(result.result_file.read_text())
    assert data["outputs"][0]["passed_bar"] is False
    assert data["outputs"][0]["variants_tried"] == min(max_tries, refs)
    # The same photos under the default bar stop at the first variant: the bar is what drives retries.
    relaxed = PortraitPipeline(RunConfig(upscale="none", retouch="none", variants=1, max_tries=max_tries)).run(
        small_dir, ["navy-formal"], tmp_path / "relaxed")
    assert relaxed.outputs[0].variants_tried == 1 and relaxed.outputs[0].passed_bar


@pytest.mark.slow
def test_an_unexpected_error_in_one_template_is_recorded_and_the_others_finish(hermetic, sample_dir, tmp_path,
                                                                              monkeypatch):
    """A bug inside one template (here: fusion raising for the studio-grey face) must not cost the others."""
    break_fusion(monkeypatch, "do not overlap", narrower_than=500)
    result = PortraitPipeline(RunConfig(variants=1, max_tries=1, upscale="none")).run(
        sample_dir, ["studio-grey", "navy-formal"], tmp_path / "out")
    assert [o.template for o in result.outputs] == ["navy-formal"]
    assert result.failures == [{"template": "studio-grey", "error": "internal",
                                "message": "unexpected ValueError: do not overlap (please report this)"}]
