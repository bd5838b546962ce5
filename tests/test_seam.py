"""The seam measure (portrait.post.seam) on a real bundled portrait: the untouched template has no
seam; a face painted in another colour has one, growing with the colour step."""

from __future__ import annotations

import math

import numpy as np
import pytest

from portrait.post.masks import face_mask
from portrait.post.seam import seam_delta_e
from portrait.templates import load_template


@pytest.fixture(scope="module")
def portrait():
    t = load_template("flag-teal-blouse")
    return np.asarray(t.image()), t.slot_faces()[0]


def test_an_untouched_face_has_no_seam(portrait):
    rgb, face = portrait
    assert seam_delta_e(rgb, rgb, face) == 0.0


def test_a_face_in_another_colour_has_a_seam_that_grows_with_the_step(portrait):
    rgb, face = portrait
    inside = face_mask(rgb.shape[:2], face) > 0
    steps = []
    for gain in (0.9, 0.75, 0.55):
        out = rgb.copy()
        out[inside] = (out[inside].astype(np.float32) * gain).astype(np.uint8)
        steps.append(seam_delta_e(out, rgb, face))
    assert steps[0] > 3.0 and steps[0] < steps[1] < steps[2], steps


def test_a_black_and_white_template_still_measures_and_sizes_must_match(portrait):
    rgb, face = portrait
    grey = np.repeat(rgb.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
    assert not math.isnan(seam_delta_e(grey, grey, face))
    with pytest.raises(ValueError, match="differ in size"):
        seam_delta_e(rgb[:-1], rgb, face)
