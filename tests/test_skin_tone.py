"""The skin-tone measure that describes templates and picks them for a user, on real
portraits from the bundled packs."""

from __future__ import annotations

import numpy as np

from portrait.post.skin_tone import skin_tone
from portrait.templates import load_template


def _tone(name: str, transform=lambda rgb: rgb):
    t = load_template(name)
    return skin_tone(transform(np.array(t.image())), t.slot_faces()[t.faces[0]])


def test_darker_skin_measures_darker_on_the_monk_scale():
    light, dark = _tone("hall-office"), _tone("flag-elder-suit")
    assert 1 <= light.monk <= 4 and 6 <= dark.monk <= 10, (light, dark)
    assert light.ita > 55 > 0 > dark.ita
    assert light.lab[0] > dark.lab[0] + 15


def test_a_black_and_white_image_has_no_tone():
    grey = _tone("hall-office", lambda rgb: np.repeat(rgb.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8))
    assert grey.monk == 0


def test_the_measure_ignores_the_backdrop_and_clothes():
    base = _tone("flag-burgundy")
    t = load_template("flag-burgundy")
    rgb = np.array(t.image())
    x0, y0, x1, y1 = (int(v) for v in t.slot_faces()[0].box)
    rgb[:, : max(0, x0 - 40)] = (0, 255, 0)  # paint everything left of the face and below the chin green
    rgb[min(rgb.shape[0], y1 + 40):] = (0, 255, 0)
    again = skin_tone(rgb, t.slot_faces()[0])
    assert again.monk == base.monk and abs(again.ita - base.ita) < 3  # the 5-point ellipse reaches a little past the chin


def test_too_little_skin_is_unknown():
    t = load_template("hall-office")
    face = t.slot_faces()[0]
    small = face.scaled(0.05)
    assert skin_tone(np.array(t.image()), small).monk == 0
