"""`portrait embed` on a raw photo folder runs the same intake and selection as preprocess first and
never averages a stranger in."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from portrait.cli import cli
from portrait.identity.face_embedding import FaceIdentity
from portrait.imageio import load_rgb
from portrait.samples import write_sample_photos
from preprocess.identity_photos import identity_photos


@pytest.mark.slow
def test_embed_on_the_raw_samples_leaves_grace_hopper_and_the_copy_out(tmp_path, face_analysis, grace_hopper):
    photos = tmp_path / "photos"
    write_sample_photos(photos)
    out = tmp_path / "id" / "identity_embedding.safetensors"
    res = CliRunner().invoke(cli, ["embed", str(photos), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout)
    assert printed["photos"] == 8
    assert {x["file"]: x["reasons"] for x in printed["left_out"]} == {"grace_hopper.jpg": ["different_person"],
                                                                      "astronaut_09_copy.jpg": ["duplicate"]}
    assert sorted(p.name for p in out.parent.iterdir()) == ["identity_embedding.safetensors", "reference.png"]
    ident = FaceIdentity.load(out)
    assert ident.count == 8 and "grace_hopper.jpg" not in ident.sources and "astronaut_09_copy.jpg" not in ident.sources
    # The averaged identity is the astronaut's and far from Grace Hopper's.
    astro = face_analysis.analyze(load_rgb(photos / "astronaut_01.jpg"))[0].embedding
    hopper = face_analysis.analyze(grace_hopper)[0].embedding
    unit = lambda v: np.asarray(v, np.float64) / np.linalg.norm(v)  # noqa: E731
    assert np.linalg.norm(ident.embedding - unit(astro)) < np.linalg.norm(ident.embedding - unit(hopper)) / 3
    ref = face_analysis.analyze(load_rgb(out.parent / "reference.png"))[0].embedding
    assert face_analysis.distance(ref, astro) < 0.6 <= face_analysis.distance(ref, hopper)


@pytest.mark.slow
def test_identity_photos_of_a_raw_folder_name_what_was_left_out_and_why(tmp_path):
    photos = tmp_path / "photos"
    write_sample_photos(photos)
    got = identity_photos(photos, tmp_path / "work")
    assert got.source_kind == "photos" and len(got.vectors) == len(got.names) == 8
    left = {x["file"]: x["reasons"] for x in got.left_out}
    assert left == {"grace_hopper.jpg": ["different_person"], "astronaut_09_copy.jpg": ["duplicate"]}
    assert got.reference is not None and got.reference.parent == tmp_path / "work" / "train"
    assert (tmp_path / "work" / "report.json").is_file()


@pytest.mark.slow
def test_identity_photos_of_a_training_set_reads_its_crops(tmp_path):
    photos = tmp_path / "photos"
    write_sample_photos(photos)
    from preprocess import PreprocessConfig, run_preprocess

    run_preprocess(photos, tmp_path / "pre", PreprocessConfig(top_k=3, resolution=256))
    got = identity_photos(tmp_path / "pre")
    assert got.source_kind == "training_set" and len(got.vectors) == 3
