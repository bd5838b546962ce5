"""Train-free identity: one face embedding per person, fed to IP-Adapter FaceID (or InstantID).

    ident = embed_identity("out/train", FaceConfig())        # mean of normalised embeddings
    ident.save("identity_embedding.safetensors")
    load_faceid_adapter(pipe, "ip-adapter-faceid_sd15.safetensors", ident.dim)
    pipe(..., ip_adapter_image_embeds=faceid_embeds(ident, batch=1, guidance=True))

The adapter's id dimension must equal the embedding engine's (128 for dlib's ResNet, 512 for
ArcFace): a real FaceID adapter is trained on ArcFace, so dlib embeddings only suit adapters built
for them (the tiny test adapters). A mismatch raises ConfigError naming both sizes.

InstantID (SDXL) is built from diffusers parts: its `ip-adapter` file loads natively through
`load_ip_adapter` (a perceiver resampler, the IP-Adapter Plus layout) and its IdentityNet is a plain
`ControlNetModel` on a 5-keypoint drawing; the one thing diffusers' pipelines do not do is give the
ControlNet the projected face tokens instead of the text embeddings, which `identitynet_hook`
adds with a forward pre-hook on that ControlNet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, NotEnoughPhotosError, PortraitError
from ..progress import ProgressCallback, report

FORMAT = "portrait.face_identity"
FORMAT_VERSION = "1"


@dataclass
class FaceIdentity:
    """A person's identity vector: the mean of their photos' L2-normalised embeddings, renormalised."""

    embedding: np.ndarray  # (dim,) float32, unit length
    engine: str  # the embedder that made it ("dlib-resnet", "arcface")
    metric: str  # how that engine compares vectors ("l2", "cosine")
    count: int = 1  # photos averaged
    norm: float = 1.0  # mean length of the raw embeddings (InstantID feeds unnormalised ArcFace vectors)
    sources: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(self.embedding.shape[0])

    def vector(self, normalized: bool = True) -> np.ndarray:
        return self.embedding if normalized else self.embedding * np.float32(self.norm)

    def metadata(self) -> dict[str, str]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "engine": self.engine, "dim": str(self.dim),
                "metric": self.metric, "count": str(self.count), "norm": f"{self.norm:.6g}",
                "sources": json.dumps(self.sources)}

    @classmethod
    def from_vectors(cls, vectors, names: list[str], engine: str, metric: str) -> "FaceIdentity":
        """The identity of raw embeddings: unit vectors averaged and renormalised; sources ordered
        nearest the mean first (sources[0] is the best reference)."""
        raw = np.asarray(vectors, np.float32)
        norms = np.linalg.norm(raw, axis=1)
        unit = raw / norms[:, None]
        mean = unit.mean(0)
        mean /= np.linalg.norm(mean) + 1e-12
        order = np.argsort(np.linalg.norm(unit - mean, axis=1), kind="stable")
        return cls(mean.astype(np.float32), engine, metric, len(raw), float(norms.mean()),
                   [names[i] for i in order])

    def save(self, path: str | Path) -> Path:
        from safetensors.numpy import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"embedding": np.ascontiguousarray(self.embedding, np.float32)}, str(path),
                  metadata=self.metadata())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FaceIdentity":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"identity file {path} does not exist")
        try:
            with safe_open(str(path), "np") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise ConfigError(f"{path} is not a face-identity file (no '{FORMAT}' metadata)")
                emb = f.get_tensor("embedding").astype(np.float32)
        except (OSError, ValueError) as exc:  # safetensors raises these on non-safetensors input
            raise ConfigError(f"{path}: cannot read face identity ({exc})") from exc
        return cls(emb, meta.get("engine", "unknown"), meta.get("metric", "l2"), int(meta.get("count", 1)),
                   float(meta.get("norm", 1.0)), json.loads(meta.get("sources", "[]")))


def is_face_identity_file(path: str | Path) -> bool:
    """True for files written by FaceIdentity.save (a LoRA file is the other kind of identity)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except Exception:  # noqa: BLE001 - any unreadable file is simply "not one of ours"
        return False


def trainset_images(folder: Path) -> list[Path]:
    """The images of a training set: DIR/train's crops for a preprocess output, else the folder's."""
    from ..imageio import image_files

    return image_files(folder / "train" if (folder / "train").is_dir() else folder)


def embed_identity(source: str | Path | Sequence[np.ndarray | str | Path], face_config=None, *,
                   face_analysis=None, min_faces: int = 1,
                   progress: ProgressCallback | None = None) -> FaceIdentity:
    """The identity of the person in a training set (a folder, preprocess output, or images).

    Each photo's largest face is embedded with the configured engine; vectors are L2-normalised,
    averaged and renormalised. Photos without a face are skipped (their names in `sources` are
    absent; the rest are listed nearest the mean first); fewer than `min_faces` usable photos raise NotEnoughPhotosError.
    """
    from ..faces import FaceConfig, get_face_analysis
    from ..imageio import load_rgb

    fa = face_analysis or get_face_analysis(face_config or FaceConfig())
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise ConfigError(f"training set {folder} is not a folder")
        items: list = trainset_images(folder)
        if not items:
            raise NotEnoughPhotosError(f"{folder} holds no images")
    else:
        items = list(source)
    vectors, names = [], []
    for i, item in enumerate(items):
        rgb = item if isinstance(item, np.ndarray) else load_rgb(item)
        faces = fa.analyze(rgb, max_faces=1)
        report(progress, "embed", i + 1, len(items))
        if not faces or faces[0].embedding is None:
            continue
        v = np.asarray(faces[0].embedding, np.float32)
        if not np.linalg.norm(v) > 0:
            continue
        vectors.append(v)
        names.append(item.name if isinstance(item, Path) else str(item) if isinstance(item, str) else f"#{i}")
    if len(vectors) < min_faces:
        raise NotEnoughPhotosError(f"found a usable face in {len(vectors)} of {len(items)} photos; need {min_faces}")
    return FaceIdentity.from_vectors(vectors, names, fa.config.embedder, fa.metric)


# -- IP-Adapter FaceID -----------------------------------------------------------------------------

def adapter_id_dim(path: str | Path) -> int:
    """The face-embedding size an IP-Adapter FaceID (or InstantID) file expects."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        for key in ("image_proj.proj.0.weight", "image_proj.proj_in.weight", "image_proj.proj.weight"):
            if key in keys:
                return int(f.get_slice(key).get_shape()[1])
    raise ConfigError(f"{path} is not an IP-Adapter file: no image_proj.proj.0 / proj_in weight")


def check_adapter_dim(path: str | Path, identity_dim: int, engine: str = "") -> int:
    dim = adapter_id_dim(path)
    if dim != identity_dim:
        by = f" from the '{engine}' face engine" if engine else ""
        raise ConfigError(
            f"the IP-Adapter {path} expects {dim}-d face embeddings but the identity has {identity_dim}-d "
            f"embeddings{by}; use the face engine the adapter was trained for (512: arcface, 128: dlib-resnet)")
    return dim


def load_faceid_adapter(pipe, adapter_path: str | Path, identity_dim: int | None = None, scale: float = 1.0,
                        engine: str = "") -> None:
    """Load an IP-Adapter FaceID (or InstantID adapter) file into `pipe` with diffusers' own loader.

    Build ControlNets from the UNet before this (DESIGN.md section 4). Idempotent per path.
    """
    path = Path(adapter_path)
    if not path.is_file():
        raise PortraitError(f"IP-Adapter file {path} does not exist")
    if identity_dim is not None:
        check_adapter_dim(path, identity_dim, engine)
    # Pipelines built from one base share its UNet, which is what the adapter changes: track it there.
    loaded = getattr(pipe.unet, "_portrait_ip_adapter", None)
    if loaded != str(path):
        if loaded is not None:
            pipe.unload_ip_adapter()
        pipe.load_ip_adapter(str(path.parent), subfolder="", weight_name=path.name, image_encoder_folder=None)
        pipe.unet._portrait_ip_adapter = str(path)
    pipe.set_ip_adapter_scale(scale)


def unload_faceid_adapter(pipe) -> None:
    """Remove a loaded IP-Adapter from the pipeline's (shared) UNet; no-op when none is loaded."""
    if getattr(pipe.unet, "_portrait_ip_adapter", None) is not None:
        pipe.unload_ip_adapter()
        pipe.unet._portrait_ip_adapter = None


def faceid_embeds(identity: FaceIdentity | np.ndarray, *, batch: int = 1, guidance: bool = True,
                  normalized: bool = True, device=None, dtype=None) -> list:
    """`ip_adapter_image_embeds` for a pipeline call: [(2 x batch | batch, 1, dim)] (zeros = unconditional)."""
    import torch

    vec = identity.vector(normalized) if isinstance(identity, FaceIdentity) else np.asarray(identity, np.float32)
    emb = torch.from_numpy(np.ascontiguousarray(vec, np.float32)).reshape(1, 1, -1).repeat(batch, 1, 1)
    if guidance:
        emb = torch.cat([torch.zeros_like(emb), emb])
    return [emb.to(device=device, dtype=dtype)]



def adapter_token_dim(path: str | Path) -> int:
    """The cross-attention size an IP-Adapter / InstantID file projects to (768 SD 1.5, 2048 SDXL)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        for key in ("image_proj.norm_out.weight", "image_proj.norm.weight", "image_proj.proj_out.weight"):
            if key in keys:
                return int(f.get_slice(key).get_shape()[0])
        for key in (k for k in keys if k.endswith(".to_k_ip.weight")):
            return int(f.get_slice(key).get_shape()[1])
    raise ConfigError(f"{path} is not an IP-Adapter file: no image projection or to_k_ip weights")


def is_resampler_adapter(path: str | Path) -> bool:
    """True for the perceiver-resampler layout (IP-Adapter Plus, InstantID's ip-adapter)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return "image_proj.latents" in set(f.keys())


def check_instantid_adapter(path: str | Path, cross_attention_dim: int, identity_dim: int | None = None,
                            engine: str = "") -> None:
    """ConfigError unless `path` is an InstantID adapter for a UNet with this cross-attention size
    (2048 for SDXL) and, when given, for `identity_dim`-d face embeddings."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"InstantID adapter {path} does not exist")
    if not is_resampler_adapter(path):
        raise ConfigError(f"{path} is not an InstantID adapter (no image_proj.latents: expected InstantID's "
                          "ip-adapter with a perceiver resampler)")
    dim = adapter_token_dim(path)
    if dim != cross_attention_dim:
        arch = {768: "SD 1.5", 2048: "SDXL"}
        raise ConfigError(
            f"the InstantID adapter {path} projects to {dim}-d tokens ({arch.get(dim, 'another base')}) but the base "
            f"model's UNet attends to {cross_attention_dim}-d ({arch.get(cross_attention_dim, 'this base')}); "
            "use the adapter made for this base (InstantID is SDXL)")
    if identity_dim is not None:
        check_adapter_dim(path, identity_dim, engine)


def instantid_embeds(identity: FaceIdentity | np.ndarray, *, batch: int = 1, guidance: bool = True,
                     device=None, dtype=None) -> list:
    """`ip_adapter_image_embeds` for InstantID's resampler adapter: [(2 x batch | batch, 1, 1, dim)], one
    face token per image, the raw (unnormalised, as InstantID was trained) embedding; zeros unconditional."""
    import torch

    vec = identity.vector(normalized=False) if isinstance(identity, FaceIdentity) else np.asarray(identity, np.float32)
    emb = torch.from_numpy(np.ascontiguousarray(vec, np.float32)).reshape(1, 1, 1, -1).repeat(batch, 1, 1, 1)
    if guidance:
        emb = torch.cat([torch.zeros_like(emb), emb])
    return [emb.to(device=device, dtype=dtype)]

# -- InstantID's IdentityNet from diffusers parts ---------------------------------------------------

def identity_tokens(unet, image_embeds: list):
    """The face tokens the UNet's IP-Adapter projection makes from `image_embeds` (one adapter)."""
    import torch

    with torch.no_grad():
        tokens = unet.encoder_hid_proj(image_embeds)
    return tokens[0].reshape(tokens[0].shape[0], -1, tokens[0].shape[-1])


def identitynet_hook(controlnet, tokens):
    """Make `controlnet` (InstantID's IdentityNet) attend to the face `tokens` instead of the prompt.

    Returns the hook handle; call `.remove()` when done. The batch of `tokens` must be the
    ControlNet's (2 x batch with classifier-free guidance, unconditional first).
    """

    def swap(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        t = tokens.to(device=sample.device, dtype=sample.dtype)
        if t.shape[0] != sample.shape[0]:
            t = t.repeat_interleave(sample.shape[0] // t.shape[0], dim=0)
        kwargs["encoder_hidden_states"] = t
        return args, kwargs

    return controlnet.register_forward_pre_hook(swap, with_kwargs=True)

