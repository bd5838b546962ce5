"""Duplicate photos, judged by the face whatever the framing.

Two photos with a face are the same photo when their aligned face crops match: near-identical
identity embeddings (dlib L2 <= `duplicate_embedding`) *and* a crop hash of the face aligned on its
5 points (a 64-bit difference hash plus a 12x12 Lab thumbnail, both over the inner face). The crop
is the same whatever surrounds the face, so a letterboxed or pillarboxed screenshot, a copy with
borders, an 80 % centre crop, a resized or re-encoded copy all match, while another photo of the
same person (other pose, other light: the Lab thumbnail moves by 5+ levels) does not.

Photos without a face fall back to a 128-bit perceptual hash of the whole frame. Of each group of
duplicates the best-scoring photo is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from portrait.faces import Face
from portrait.faces.align import align_face


@dataclass(frozen=True)
class FaceSignature:
    dhash: np.ndarray  # 64 bools
    lab: np.ndarray  # (12, 12, 3) float32 Lab thumbnail of the inner face


def perceptual_hash(image: np.ndarray) -> np.ndarray:
    """128 bools: 64-bit dHash (horizontal gradients of a 9x8 thumbnail) + 64-bit pHash (8x8 DCT)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    # Area resampling in two steps so a 1000 px and a 100 px copy of the same photo agree.
    small = cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    d = cv2.resize(small, (9, 8), interpolation=cv2.INTER_AREA)
    dhash = (d[:, 1:] > d[:, :-1]).ravel()
    dct = cv2.dct(cv2.resize(small, (32, 32), interpolation=cv2.INTER_AREA))[:8, :8].ravel()
    low = dct[1:]  # without the DC term (overall brightness)
    phash = np.concatenate([[True], low > np.median(low)])
    return np.concatenate([dhash, phash])


def face_signature(image: np.ndarray, face: Face) -> FaceSignature:
    """The crop hash of `face` (in `image`'s coordinates): the inner face aligned on its 5 points."""
    chip, _ = align_face(np.ascontiguousarray(image), face.landmarks5, 80, 1.0, border="replicate")
    inner = np.ascontiguousarray(chip[12:-8, 10:-10])
    grey = cv2.cvtColor(inner, cv2.COLOR_RGB2GRAY).astype(np.float32)
    d = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(inner, cv2.COLOR_RGB2LAB).astype(np.float32)
    return FaceSignature((d[:, 1:] > d[:, :-1]).ravel(),
                         cv2.resize(lab, (12, 12), interpolation=cv2.INTER_AREA))


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.count_nonzero(a != b))


def same_face_photo(a: FaceSignature, b: FaceSignature, embedding_distance: float, *, max_embedding: float,
                    max_bits: int, max_lab: float) -> bool:
    """True when two faces' crops say they come from the same photo."""
    return (embedding_distance <= max_embedding and hamming(a.dhash, b.dhash) <= max_bits
            and float(np.abs(a.lab - b.lab).mean()) <= max_lab)


def group_duplicates(n: int, same: Callable[[int, int], bool], rank: Sequence[float]) -> dict[int, int]:
    """Map each duplicate's index to the index of the photo kept in its place.

    Photos for which `same(i, j)` holds are grouped (transitively); the one with the highest `rank`
    (ties: the earliest) is kept, the others are duplicates of it."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if find(i) != find(j) and same(i, j):
                parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    out: dict[int, int] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        keep = max(members, key=lambda i: (rank[i], -i))
        out.update({i: keep for i in members if i != keep})
    return out


def find_face_duplicates(signatures: Sequence[Optional[FaceSignature]], embeddings: Sequence[Optional[np.ndarray]],
                         hashes: Sequence[np.ndarray | None], rank: Sequence[float], distance, *, max_embedding: float,
                         face_bits: int, max_lab: float, frame_bits: int) -> dict[int, int]:
    """Duplicates among all photos: by the face where both have one, else by the whole frame."""

    def same(i: int, j: int) -> bool:
        si, sj, ei, ej = signatures[i], signatures[j], embeddings[i], embeddings[j]
        if si is not None and sj is not None and ei is not None and ej is not None:
            return same_face_photo(si, sj, distance(ei, ej), max_embedding=max_embedding, max_bits=face_bits,
                                   max_lab=max_lab)
        if si is None and sj is None:
            return hashes[i] is not None and hashes[j] is not None and hamming(hashes[i], hashes[j]) <= frame_bits
        return False

    return group_duplicates(len(rank), same, rank)
