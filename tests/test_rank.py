"""Ranking by likeness: order, the 0..1 similarity, the bar and the retry hook."""

from __future__ import annotations

import math

import numpy as np
import pytest

from portrait.post import rank


def _emb(*v):
    return np.array(v, np.float64)


def test_likeness_uses_the_centroid():
    user = [_emb(0, 0), _emb(0.2, 0)]
    assert rank.likeness(_emb(0.1, 0), user) == pytest.approx(0.0)
    assert rank.likeness(_emb(0.1, 0.3), _emb(0.1, 0)) == pytest.approx(0.3)
    assert rank.likeness(_emb(1, 0), [_emb(2, 0), _emb(0, 2)], metric="cosine") == pytest.approx(1 - math.sqrt(0.5))
    with pytest.raises(ValueError):
        rank.centroid([])


def test_rank_outputs_orders_scores_and_flags():
    user = _emb(0, 0)
    cands = [rank.Candidate(_emb(0.55, 0), path="b.png"), rank.Candidate(None, path="noface.png"),
             rank.Candidate(_emb(0.3, 0), path="a.png", meta={"seed": 1}), rank.Candidate(_emb(0.9, 0), path="c.png")]
    ranked = rank.rank_outputs(cands, user, threshold=0.6, bar=0.5)
    assert [r.path for r in ranked] == ["a.png", "b.png", "c.png", "noface.png"]
    assert [r.rank for r in ranked] == [1, 2, 3, 4]
    assert [r.passed_bar for r in ranked] == [True, False, False, False]
    assert ranked[0].similarity == pytest.approx(0.75) and ranked[2].similarity == pytest.approx(0.25)
    assert ranked[3].similarity == 0.0 and ranked[3].meta["reason"] == "no_face"
    d = ranked[0].to_dict()
    assert d["distance"] == 0.3 and d["seed"] == 1 and ranked[3].to_dict()["distance"] is None
    # Without a bar, the threshold is the bar.
    assert [r.passed_bar for r in rank.rank_outputs(cands, user)] == [True, True, False, False]


def test_best_of_retries_until_the_bar_is_met():
    dists = [0.8, 0.7, 0.4, 0.2]
    seen = []

    def make(i):
        seen.append(i)
        return rank.Candidate(_emb(dists[i], 0))

    ranked = rank.best_of(make, _emb(0, 0), variants=1, max_tries=4, bar=0.5)
    assert seen == [0, 1, 2] and ranked[0].passed_bar and ranked[0].meta["variant"] == 2
    seen.clear()
    ranked = rank.best_of(make, _emb(0, 0), variants=2, max_tries=4, bar=0.1)
    assert seen == [0, 1, 2, 3] and not any(r.passed_bar for r in ranked)


def test_output_face_prefers_the_slot():
    from portrait.faces.types import Face

    def face(x, s):
        return Face(box=np.array([x, 0, x + s, s], np.float32), score=1.0, landmarks5=np.zeros((5, 2), np.float32))

    big, small = face(0, 100), face(300, 50)
    assert rank.output_face([small, big]) is big
    assert rank.output_face([small, big], near=face(290, 60)) is small
    assert rank.output_face([]) is None
