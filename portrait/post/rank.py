"""Ranking outputs by likeness to the user.

Distances are the face embedder's own (dlib ResNet: L2, same person below 0.6; ArcFace: cosine).
The user is represented by the centroid of their accepted photos' embeddings (L2-normalised first
under the cosine metric).

similarity (0..1) is a readable score derived from the distance d and the embedder's same-person
threshold t:  similarity = clip(1 - d / (2 t), 0, 1). Identical faces score 1, a face exactly at the
threshold 0.5, twice the threshold or more 0. Ordering by similarity is ordering by distance.

A likeness bar (a distance; default the embedder's threshold) flags outputs that miss it;
`best_of` is the retry hook: it asks a caller's function for variants (another seed, reference
photo or fusion setting) until one passes the bar or the budget is spent.

What is measured is what a viewer sees: `measure_slots` finds, in the written output, the face that
sits in each painted slot (overlapping the slot's box, not merely the nearest face), and says
whether it is one of the picture's main faces (`main_faces`: at least MAIN_FACE_RATIO of the largest
face's size). "passes" is only ever said of a painted face found in its slot that is a main face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import ConfigError
from ..faces.base import distance as _distance, iou
from ..faces.types import Face


MAIN_FACE_RATIO = 0.5  # a face at least this x the largest face's size is one of the picture's main faces
SLOT_IOU = 0.3  # an output face overlapping a slot's box this much is the face painted there


@dataclass
class Candidate:
    """One output to rank: its pixels and/or file, and the identity embedding of its face (None: no face).
    `eligible` False: the judged face is not one a viewer sees as the picture's subject (never passes)."""

    embedding: np.ndarray | None
    image: np.ndarray | None = None
    path: str | None = None
    meta: dict = field(default_factory=dict)
    eligible: bool = True


@dataclass(frozen=True)
class SlotLikeness:
    """The face a viewer sees in one painted slot of an output, against the person painted there."""

    slot: int
    found: bool  # a face overlaps the slot's box in the output
    main_face: bool  # ... and it is one of the picture's main faces
    distance: float  # to the painted person (inf when not found)
    passes: bool  # found, a main face, and within the bar
    embedding: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {"found": self.found, "main_face": self.main_face,
                "distance": None if not math.isfinite(self.distance) else round(self.distance, 4),
                "passes": self.passes}


def main_faces(faces: Sequence[Face]) -> list[Face]:
    """The faces a viewer takes for the picture's subjects: at least MAIN_FACE_RATIO of the largest's size."""
    if not faces:
        return []
    largest = max(f.size for f in faces)
    return [f for f in faces if f.size >= MAIN_FACE_RATIO * largest]


def face_in_slot(faces: Sequence[Face], slot: Face) -> Face | None:
    """The output face sitting in `slot` (best box overlap, at least SLOT_IOU), else None."""
    best = max(faces, key=lambda f: iou(f.box, slot.box), default=None)
    return best if best is not None and iou(best.box, slot.box) >= SLOT_IOU else None


def measure_slots(faces: Sequence[Face], slots: dict[int, Face], targets: dict[int, np.ndarray],
                  distance: Callable[[np.ndarray, np.ndarray], float], bar: float) -> dict[int, SlotLikeness]:
    """Per painted slot: the output face in it (`faces`, with embeddings, in the output's coordinates;
    `slots` scaled to them), whether it is a main face, and its distance to `targets[slot]`."""
    main = {id(f) for f in main_faces(faces)}
    out = {}
    for s, target in targets.items():
        f = face_in_slot(faces, slots[s])
        if f is None or f.embedding is None:
            out[s] = SlotLikeness(s, False, False, math.inf, False)
            continue
        d = float(distance(f.embedding, target))
        is_main = id(f) in main
        out[s] = SlotLikeness(s, True, is_main, d, is_main and d <= bar, f.embedding)
    return out


@dataclass
class RankedOutput:
    distance: float  # to the user's centroid under the embedder's metric; inf when no face was found
    similarity: float  # 0..1, see the module doc
    passed_bar: bool
    rank: int = 0  # 1 = most like the user
    image: np.ndarray | None = None
    path: str | None = None
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """result.json form (no pixels)."""
        return {"rank": self.rank, "path": self.path,
                "distance": None if math.isinf(self.distance) else round(self.distance, 4),
                "similarity": round(self.similarity, 4), "passed_bar": self.passed_bar, **self.meta}


def centroid(embeddings: np.ndarray | Sequence[np.ndarray], metric: str = "l2") -> np.ndarray:
    """The user's identity centroid: mean embedding (of unit vectors under cosine)."""
    e = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
    if e.size == 0:
        raise ValueError("no user embeddings to build a centroid from")
    if metric == "cosine":
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return e.mean(0)


def likeness(face_embedding: np.ndarray, user: np.ndarray | Sequence[np.ndarray], metric: str = "l2") -> float:
    """Distance from `face_embedding` to the user: a centroid (1-D) or the user's embeddings (2-D, their
    centroid is used). Smaller is more alike."""
    u = np.asarray(user, dtype=np.float64)
    return _distance(face_embedding, u if u.ndim == 1 else centroid(u, metric), metric)


def similarity_from_distance(d: float, threshold: float) -> float:
    if not math.isfinite(d):
        return 0.0
    return float(min(1.0, max(0.0, 1.0 - d / (2.0 * threshold))))


def output_face(faces: list[Face], near: Face | None = None) -> Face | None:
    """The face to judge in an output: the one whose box centre is nearest `near` (the template's
    slot), else the largest; None when no face was found."""
    if not faces:
        return None
    if near is None:
        return max(faces, key=lambda f: f.size)
    return min(faces, key=lambda f: float(np.linalg.norm(f.center - near.center)))


def rank_outputs(candidates: Iterable[Candidate], user: np.ndarray | Sequence[np.ndarray], metric: str = "l2",
                 threshold: float = 0.6, bar: float | None = None) -> list[RankedOutput]:
    """Candidates scored against the user and sorted most-alike first (ties keep input order).

    threshold: the embedder's same-person distance (dlib 0.6); bar: the likeness bar as a distance
    (default: the threshold). Candidates without a face rank last with passed_bar False.
    """
    bar = threshold if bar is None else bar
    ranked = []
    for c in candidates:
        d = math.inf if c.embedding is None else likeness(c.embedding, user, metric)
        ranked.append(RankedOutput(d, similarity_from_distance(d, threshold), c.eligible and d <= bar, image=c.image,
                                   path=c.path,
                                   meta=dict(c.meta, **({} if c.embedding is not None else {"reason": "no_face"}))))
    ranked.sort(key=lambda r: r.distance)
    for i, r in enumerate(ranked, 1):
        r.rank = i
    return ranked


def best_of(make_variant: Callable[[int], Candidate], user: np.ndarray | Sequence[np.ndarray], *,
            variants: int = 1, max_tries: int = 4, metric: str = "l2", threshold: float = 0.6,
            bar: float | None = None) -> list[RankedOutput]:
    """The retry hook: call `make_variant(i)` for i = 0.. at least `variants` times and, while no
    output passes the bar, again up to `max_tries` in all; return every output ranked."""
    if variants < 1 or max_tries < variants:
        raise ConfigError("need 1 <= variants <= max_tries")
    cands: list[Candidate] = []
    limit = threshold if bar is None else bar
    for i in range(max_tries):
        cand = make_variant(i)
        cand.meta.setdefault("variant", i)
        cands.append(cand)
        if i + 1 >= variants and any(c.eligible and c.embedding is not None
                                     and likeness(c.embedding, user, metric) <= limit for c in cands):
            break
    return rank_outputs(cands, user, metric=metric, threshold=threshold, bar=bar)
