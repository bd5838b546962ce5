"""Checkpoint choice for identity LoRAs: validation renders scored by face likeness, top-k, merging.

A validator is `validate(pipe, step, lora_path) -> float`: it renders with the LoRA being trained
(active on `pipe`, and saved at `lora_path`) and returns a likeness score, higher is better
(`NO_FACE` when no face was found: the worst score).

    validator = text2img_validator(user_embeddings, prompt="a photo of ohwx person")
    chosen = choose_checkpoints(scores, top_k=3)
    merged = merge_loras([load_file(p) for p in paths])   # average of B@A per layer, re-factorised by SVD
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

NO_FACE = float("-inf")
Validator = Callable[[object, int, object], float]


# -- scoring -------------------------------------------------------------------------------------------
def face_score(images: Sequence[np.ndarray], centroid: np.ndarray, face_analysis) -> float:
    """Mean likeness of the largest face in each image to the user's centroid: minus the embedder's
    distance (so higher is better); an image with no face counts as NO_FACE."""
    scores = []
    for img in images:
        faces = face_analysis.analyze(img, max_faces=1)
        if not faces or faces[0].embedding is None:
            return NO_FACE
        scores.append(-face_analysis.distance(faces[0].embedding, centroid))
    return float(np.mean(scores)) if scores else NO_FACE


def user_centroid(images: Sequence[np.ndarray], face_analysis) -> np.ndarray | None:
    """The mean identity embedding of the faces found in the user's crops (None if none is found)."""
    embs = []
    for img in images:
        faces = face_analysis.analyze(img, max_faces=1)
        if faces and faces[0].embedding is not None:
            embs.append(np.asarray(faces[0].embedding, dtype=np.float64))
    if not embs:
        return None
    c = np.mean(embs, axis=0)
    if face_analysis.metric == "cosine":
        c /= np.linalg.norm(c) + 1e-12
    return c


def text2img_validator(centroid: np.ndarray | None, prompt: str, face_analysis, *, resolution: int = 256,
                       steps: int = 12, seeds: Sequence[int] = (0, 1), guidance_scale: float = 6.0) -> Validator:
    """The default validator: render `prompt` (with the trigger word) at low resolution with the LoRA
    being trained, detect the face and score its likeness to the user's centroid.

    Without a centroid (no face found in the training crops) every checkpoint scores NO_FACE and the
    choice falls to the latest one.
    """
    import torch

    def validate(pipe, step: int, lora_path=None) -> float:  # noqa: ARG001 - the hook's signature
        if centroid is None:
            return NO_FACE
        images = []
        for seed in seeds:
            gen = torch.Generator("cpu").manual_seed(int(seed))
            out = pipe(prompt, height=resolution, width=resolution, num_inference_steps=steps,
                       guidance_scale=guidance_scale, generator=gen, output_type="np").images[0]
            images.append((np.clip(out, 0, 1) * 255).round().astype(np.uint8))
        return face_score(images, centroid, face_analysis)

    return validate


# -- choosing and merging ------------------------------------------------------------------------------
def choose_checkpoints(scores: dict[int, float], top_k: int = 1) -> list[int]:
    """The steps of the `top_k` best-scoring checkpoints, best first; ties go to the later step."""
    if not scores:
        return []
    order = sorted(scores, key=lambda s: (-scores[s], -s))
    return order[:max(1, top_k)]


def _pairs(state: dict) -> dict[str, tuple[str, str]]:
    """prefix → (down key, up key) for every LoRA layer (diffusers `.lora.down/up` or PEFT `.lora_A/B`)."""
    out = {}
    for key in state:
        for down, up in ((".lora.down.weight", ".lora.up.weight"), (".lora_A.weight", ".lora_B.weight")):
            if key.endswith(down):
                prefix = key[: -len(down)]
                out[prefix] = (key, prefix + up)
    return out


def merge_loras(states: Sequence[dict], rank: int | None = None) -> dict:
    """Average several LoRAs of the same layers as full deltas (mean of up @ down per layer), then
    re-factorise each mean by SVD to `rank` (default: the inputs' rank).

    Averaging the down and up factors separately would not average the deltas (their product mixes
    checkpoints); the SVD keeps the best rank-r approximation of the true mean. Scales must already
    be baked into the factors (as `train_lora` saves them: alpha == rank).
    """
    import torch

    if not states:
        raise ValueError("nothing to merge")
    if len(states) == 1:
        return dict(states[0])
    pairs = _pairs(states[0])
    merged = {}
    for prefix, (down_key, up_key) in pairs.items():
        down0 = states[0][down_key]
        r = rank or down0.shape[0]
        delta = sum(s[up_key].double().flatten(1) @ s[down_key].double().flatten(1) for s in states) / len(states)
        u, sv, vh = torch.linalg.svd(delta, full_matrices=False)
        k = min(r, sv.shape[0])
        root = sv[:k].sqrt()
        up = torch.zeros(delta.shape[0], r, dtype=torch.float64)
        down = torch.zeros(r, delta.shape[1], dtype=torch.float64)
        up[:, :k] = u[:, :k] * root
        down[:k] = root[:, None] * vh[:k]
        merged[down_key] = down.to(down0.dtype).reshape(r, *down0.shape[1:]).contiguous()
        merged[up_key] = up.to(down0.dtype).reshape(states[0][up_key].shape[0], r, *states[0][up_key].shape[2:]).contiguous()
    for key, value in states[0].items():  # anything that is not a factor pair (e.g. alphas) is kept
        if key not in merged:
            merged[key] = value
    return merged


def lora_delta(state: dict) -> dict[str, "torch.Tensor"]:  # noqa: F821 - torch imported lazily
    """prefix → full delta (up @ down) per layer: what a LoRA adds to each weight (at alpha == rank)."""
    return {p: state[u].double().flatten(1) @ state[d].double().flatten(1) for p, (d, u) in _pairs(state).items()}
