"""Duplicate photos: a 128-bit perceptual hash (difference hash + DCT hash) per photo.

Both halves are computed on a small greyscale thumbnail, so the same photo re-encoded (JPEG quality,
PNG/WebP), resized, or with mild brightness/contrast changes hashes within a few bits, while another
framing or a mirrored copy lands far away. Of each group of duplicates the best-scoring photo is kept.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


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


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.count_nonzero(a != b))


def find_duplicates(hashes: Sequence[np.ndarray | None], rank: Sequence[float], max_bits: int) -> dict[int, int]:
    """Map each duplicate's index to the index of the photo kept in its place.

    Photos whose hashes are within `max_bits` are grouped (transitively); the one with the highest
    `rank` (ties: the earliest) is kept, the others are duplicates of it.
    """
    n = len(hashes)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        if hashes[i] is None:
            continue
        for j in range(i + 1, n):
            if hashes[j] is not None and hamming(hashes[i], hashes[j]) <= max_bits:
                parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        if hashes[i] is not None:
            groups.setdefault(find(i), []).append(i)
    out: dict[int, int] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        keep = max(members, key=lambda i: (rank[i], -i))
        out.update({i: keep for i in members if i != keep})
    return out
