"""`portrait embed` on a raw photo folder runs the same intake and selection as preprocess first and
never averages a stranger in (issue 7 item 7)."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from portrait.cli import cli
from portrait.identity.face_embedding import FaceIdentity
from portrait.imageio import load_rgb
from portrait.samples import write_sample_photos
from preprocess.identity_photos import identity_photos


def test_embed_on_the_raw_samples_leaves_grace_hopper_and_the_copy_out(tmp_path, face_analysis, grace_hopper):
    photos = tmp_path / "photos"
    write_sample_photos(photos)
    out = tmp_path / "id" / "identity_embedding.safetensors"
    res = CliRunner().invoke(cli, ["embed", str(photos), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["source_kind"] == "photos" and "grace_hopper.jpg" not in info["used"]
    left = {x["file"]: x["reasons"] for x in info["left_out"]}
    assert left["grace_hopper.jpg"] == ["different_person"] and left["astronaut_09_copy.jpg"] == ["duplicate"]
    ident = FaceIdentity.load(out)
    assert ident.count == len(info["used"]) == 8 and "grace_hopper.jpg" not in ident.sources
    # The averaged identity is the astronaut's and far from Grace Hopper's.
    astro = face_analysis.analyze(load_rgb(photos / "astronaut_01.jpg"))[0].embedding
    hopper = face_analysis.analyze(grace_hopper)[0].embedding
    unit = lambda v: np.asarray(v, np.float64) / np.linalg.norm(v)  # noqa: E731
    assert np.linalg.norm(ident.embedding - unit(astro)) < np.linalg.norm(ident.embedding - unit(hopper)) / 3
    assert (out.parent / "reference.png").is_file() and (out.parent / "preprocess" / "report.json").is_file()
    ref = face_analysis.analyze(load_rgb(out.parent / "reference.png"))[0].embedding
    assert face_analysis.distance(ref, astro) < 0.6 <= face_analysis.distance(ref, hopper)


def test_identity_photos_of_a_training_set_reads_its_crops(tmp_path):
    photos = tmp_path / "photos"
    write_sample_photos(photos)
    from preprocess import PreprocessConfig, run_preprocess

    run_preprocess(photos, tmp_path / "pre", PreprocessConfig(top_k=3, resolution=256))
    got = identity_photos(tmp_path / "pre")
    assert got.source_kind == "training_set" and len(got.vectors) == 3
