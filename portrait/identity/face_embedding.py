"""Train-free identity: one face embedding per person, fed to IP-Adapter FaceID (or InstantID).

    ident = embed_identity("out/train", FaceConfig())        # mean of normalised embeddings
    ident.save("identity_embedding.safetensors")

The adapters that paint it load in portrait.generate.pipelines (load_faceid_adapter, faceid_embeds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, NotEnoughPhotosError
from ..progress import ProgressCallback, check_cancel, report
from ..paths import train_folder

FORMAT = "portrait.face_identity"
FORMAT_VERSION = "1"


@dataclass
class FaceIdentity:
    """A person's identity vector: the mean of their photos' L2-normalised embeddings, renormalised."""

    embedding: np.ndarray  # (dim,) float32, unit length
    engine: str  # the manifest model that made it ("dlib-resnet", "arcface-buffalo", "arcface-antelopev2")
    metric: str  # how that engine compares vectors ("l2", "cosine")
    count: int = 1  # photos averaged
    norm: float = 1.0  # mean length of the raw embeddings: InstantID is fed embedding x norm (insightface's raw
    #                    ArcFace vector, length ~15-30 on real faces), FaceID the unit embedding
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

    return image_files(train_folder(folder))


def embed_identity(source: str | Path | Sequence[np.ndarray | str | Path], face_config=None, *,
                   face_analysis=None, min_faces: int = 1,
                   progress: ProgressCallback | None = None, cancel=None) -> FaceIdentity:
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
        check_cancel(cancel, "embedding cancelled")
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
    from ..faces.analysis import embedder_model

    # The engine recorded is the manifest model that made the vectors (arcface-buffalo, arcface-antelopev2,
    # dlib-resnet): an adapter checks it (portrait.models.adapters.check_embedder).
    return FaceIdentity.from_vectors(vectors, names, embedder_model(fa.config.embedder), fa.metric)
