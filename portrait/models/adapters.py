"""What an image-prompt adapter file is, read from its keys and metadata without loading it.

Three kinds of face adapter files are in use (all loaded by diffusers' `load_ip_adapter`):
  faceid        IP-Adapter FaceID: `image_proj` an MLP (proj.0, proj.2, norm) from one face embedding to 4 tokens
  faceid-plus   IP-Adapter FaceID-Plus / PlusV2: the same MLP plus `perceiver_resampler.*`, which also reads
                CLIP ViT-H hidden states of the face crop; PlusV2 adds the MLP's tokens back ("shortcut")
  instantid     InstantID's ip-adapter: a perceiver resampler (`latents`, proj_in, layers, proj_out, norm_out)

Each was trained on one face recogniser's embeddings (the manifest model name): FaceID, Plus and PlusV2 on
insightface's buffalo_l (`arcface-buffalo`), InstantID on antelopev2 (`arcface-antelopev2`). Both give 512-d
vectors, so the size alone cannot tell them apart: `check_embedder` refuses an identity made by another
model, naming both. A file may name its recogniser in its safetensors metadata (`face_embedder`), as the
tiny test adapters built for dlib's 128-d embeddings do.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .manifest import ALIASES  # identity files written before the two recognisers had names

FACEID, FACEID_PLUS, INSTANTID = "faceid", "faceid-plus", "instantid"
TRAINED_ON = {FACEID: "arcface-buffalo", FACEID_PLUS: "arcface-buffalo", INSTANTID: "arcface-antelopev2"}
LABELS = {FACEID: "IP-Adapter FaceID", FACEID_PLUS: "IP-Adapter FaceID-Plus", INSTANTID: "InstantID"}


def _keys_and_meta(path: str | Path) -> tuple[set[str], dict]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"adapter file {path} does not exist")
    if path.suffix != ".safetensors":
        raise ConfigError(f"{path}: adapters are read as .safetensors; convert the released file first: "
                          f"`portrait models convert {path}`")
    try:
        with safe_open(str(path), "pt") as f:
            return set(f.keys()), dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types on a bad file
        raise ConfigError(f"{path}: cannot read the adapter file ({exc})") from exc


def _shape(path: str | Path, key: str) -> list[int]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(f.get_slice(key).get_shape())


def adapter_id_dim(path: str | Path) -> int:
    """The face-embedding size an IP-Adapter FaceID (or InstantID) file expects."""
    keys, _ = _keys_and_meta(path)
    for key in ("image_proj.proj.0.weight", "image_proj.proj_in.weight", "image_proj.proj.weight"):
        if key in keys:
            return int(_shape(path, key)[1])
    raise ConfigError(f"{path} is not an IP-Adapter file: no image_proj.proj.0 / proj_in weight")


def adapter_token_dim(path: str | Path) -> int:
    """The cross-attention size an IP-Adapter / InstantID file projects to (768 SD 1.5, 2048 SDXL)."""
    keys, _ = _keys_and_meta(path)
    for key in ("image_proj.norm_out.weight", "image_proj.norm.weight", "image_proj.proj_out.weight"):
        if key in keys:
            return int(_shape(path, key)[0])
    for key in sorted(k for k in keys if k.endswith(".to_k_ip.weight")):
        return int(_shape(path, key)[1])
    raise ConfigError(f"{path} is not an IP-Adapter file: no image projection or to_k_ip weights")


def is_resampler_adapter(path: str | Path) -> bool:
    """True for the perceiver-resampler layout (InstantID's ip-adapter)."""
    keys, _ = _keys_and_meta(path)
    return "image_proj.latents" in keys


def adapter_kind(path: str | Path) -> str:
    """FACEID, FACEID_PLUS or INSTANTID; a ConfigError naming the file for anything else."""
    keys, _ = _keys_and_meta(path)
    if "image_proj.perceiver_resampler.proj_in.weight" in keys:
        return FACEID_PLUS
    if "image_proj.latents" in keys:
        return INSTANTID
    if "image_proj.proj.0.weight" in keys and "image_proj.norm.weight" in keys:
        return FACEID
    raise ConfigError(f"{path} is not a face adapter file: expected IP-Adapter FaceID (image_proj.proj.0 / norm), "
                      "FaceID-Plus (image_proj.perceiver_resampler) or InstantID (image_proj.latents) weights")


def trained_on(path: str | Path, kind: str | None = None) -> str:
    """The manifest name of the face recogniser whose embeddings the adapter takes."""
    _, meta = _keys_and_meta(path)
    named = meta.get("face_embedder")
    return named if named and named != "default" else TRAINED_ON[kind or adapter_kind(path)]


def check_embedder(path: str | Path, engine: str, kind: str | None = None) -> None:
    """ConfigError unless an identity made by face engine `engine` suits the adapter, naming both models."""
    kind = kind or adapter_kind(path)
    want, got = trained_on(path, kind), ALIASES.get(engine, engine)
    if got != want:
        raise ConfigError(
            f"the {LABELS[kind]} adapter {Path(path).name} was trained on '{want}' face embeddings, but this identity "
            f"was made by '{got}': embed the photos again with --embedder {want}")


def plus_shortcut(path: str | Path) -> bool:
    """True for FaceID-PlusV2 (the MLP tokens are added back to the resampler's: `shortcut`). Plus and PlusV2
    share one layout; the released names tell them apart (…-plusv2_sd15.bin), and `portrait models convert`
    keeps the original name in the metadata (`converted_from`); `faceid_shortcut` metadata overrides."""
    _, meta = _keys_and_meta(path)
    if "faceid_shortcut" in meta:
        return meta["faceid_shortcut"].lower() in ("1", "true", "yes")
    names = (meta.get("converted_from", ""), Path(path).name)
    return any("plusv2" in n.lower().replace("-", "").replace("_", "") for n in names)
