"""`--template auto[:N]`: the templates that suit this user, chosen from the bundled
packs' measured yaw and skin tone, with the reasons in result.json; bad specs refused before any photo
is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers_photos import small_photo_set
from portrait.cli import cli
from portrait.errors import ConfigError
from portrait.templates.choice import AutoRequest, UserLook, candidates, choose, parse_auto
from portrait.templates import bundled_dir, list_templates, load_template

pytestmark = pytest.mark.usefixtures("hermetic")
QUICK = ["--upscale", "none", "--variants", "1", "--max-tries", "1"]


@pytest.fixture(scope="module")
def packs():
    return list_templates([bundled_dir()])


def test_specs_parse_and_bad_ones_are_refused():
    assert parse_auto("auto") == AutoRequest(3)
    assert parse_auto("auto:5") == AutoRequest(5)
    assert parse_auto("auto:2:studio,bw") == AutoRequest(2, ("studio", "bw"))
    assert parse_auto("navy-formal") is None and parse_auto("automobile") is None
    for bad in ("auto:0", "auto:13", "auto:x", "auto:2:Studio"):
        with pytest.raises(ConfigError, match="auto"):
            parse_auto(bad)


def test_a_turned_user_gets_templates_turned_the_same_way(packs):
    pool = candidates(packs, AutoRequest(3))
    right = choose(UserLook(yaw=20.0, ita=40.0, monk=5), pool, 3)
    left = choose(UserLook(yaw=-20.0, ita=40.0, monk=5), pool, 3)
    assert all(c.yaw >= 10 for c in right) and all(c.yaw <= -10 for c in left), (right, left)


def test_a_darker_user_gets_templates_with_darker_skin(packs):
    pool = candidates(packs, AutoRequest(4))
    dark = choose(UserLook(yaw=-8.0, ita=-15.0, monk=7), pool, 4)
    light = choose(UserLook(yaw=-8.0, ita=55.0, monk=4), pool, 4)
    assert all(c.ita is None or c.ita < 15 for c in dark), dark  # black and white hides tone: it may be chosen
    assert all(c.ita is None or c.ita > 30 for c in light), light
    colour = lambda cs: [c.ita for c in cs if c.ita is not None]  # noqa: E731
    assert len(colour(dark)) >= 2 and max(colour(dark)) < min(colour(light)) - 20


def test_tags_filter_and_multi_face_packs_are_never_chosen(packs):
    pool = candidates(packs, AutoRequest(2, ("studio", "bw")))
    assert pool and all({"studio", "bw"} <= set(t.tags) and len(t.faces) == 1 for t in pool)
    with pytest.raises(ConfigError, match="only 0 single-face template.*no-such-tag"):
        candidates(packs, AutoRequest(1, ("no-such-tag",)))
    assert not any(len(t.faces) > 1 for t in candidates(packs, AutoRequest(3)))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return small_photo_set(tmp_path_factory)


@pytest.mark.slow
def test_cli_auto_renders_the_chosen_templates_and_says_why(photos, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["run", str(photos), "--template", "auto:2", "--tags", "formal",
                                   "--template", "astronaut-wide", "--out", str(out), *QUICK])
    assert res.exit_code == 0, res.output
    assert "auto:2:formal chose" in res.output and "head turn" in res.output
    data = json.loads((out / "result.json").read_text())
    [pick] = data["auto"]["picks"]
    chosen = [c["template"] for c in pick["chosen"]]
    assert len(chosen) == 2 and "astronaut-wide" not in chosen  # the best one for this user, but named: not twice
    assert all("formal" in load_template(n).tags for n in chosen)
    assert {"yaw", "ita", "skin_tone"} <= set(data["auto"]["user"])
    assert sorted(o["template"] for o in data["outputs"]) == sorted(chosen + ["astronaut-wide"])
    assert all((out / f"{n}.png").is_file() for n in chosen)


def test_cli_refuses_bad_auto_before_reading_photos(photos, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["run", str(photos), "--template", "auto:99", "--out", str(tmp_path / "a")])
    assert res.exit_code == 2 and "N must be 1..12" in res.output
    res = runner.invoke(cli, ["run", str(photos), "--template", "navy-formal", "--tags", "studio",
                              "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "--template auto" in res.output
    res = runner.invoke(cli, ["run", str(photos), "--template", "auto", "--tags", "nope", "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "only 0 single-face" in res.output
    assert not (tmp_path / "a" / "preprocess").exists() and not (tmp_path / "c" / "preprocess").exists()
