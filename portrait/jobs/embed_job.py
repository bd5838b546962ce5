"""The embed job: a train-free identity (the mean face embedding) and its reference photo, for
IP-Adapter FaceID / InstantID; `portrait generate` reads both."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..faces import FaceConfig, get_face_analysis
from ..identity.face_embedding import FaceIdentity, embed_identity
from ..identity.reference import write_reference
from ..progress import CancelToken, ProgressCallback
from ..paths import train_folder
from .configs import EmbedConfig
from .results import EmbedResult


def is_trainset(folder: Path) -> bool:
    """A preprocess output (train/ with metadata.jsonl) or a training set folder (metadata.jsonl)."""
    return (folder / "train" / "metadata.jsonl").is_file() or (folder / "metadata.jsonl").is_file() \
        or (folder / "train").is_dir()


def embed(source: Path, out_dir: Path, config: EmbedConfig | None = None, *, progress: ProgressCallback | None = None,
          cancel: CancelToken | None = None, pool=None) -> EmbedResult:
    """out_dir/<file_name> (the identity) and out_dir/reference.png (the photo nearest it).

    `source`: a training set (preprocess output: its crops are embedded) or a raw photo folder (intake and
    selection run first, nothing else is written; the selected photos are embedded)."""
    config = config or EmbedConfig()
    src, out_dir = Path(source), Path(out_dir)
    if not src.is_dir():
        raise ConfigError(f"{src} is not a folder (a training set from `portrait preprocess`, or photos)")
    face = FaceConfig(detector=config.detector, embedder=config.embedder, models_dir=config.models_dir)
    if is_trainset(src):
        ident = embed_identity(src, face_analysis=get_face_analysis(face), progress=progress, cancel=cancel)
        folder = train_folder(src)
        ref = folder / ident.sources[0] if ident.sources else None
        left_out: tuple = ()
    else:
        ident, ref, left_out = _embed_photos(src, face, config, progress, cancel, pool)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = ident.save(out_dir / config.file_name)
    # The photo nearest the identity serves as the fusion reference for `portrait generate`.
    reference = write_reference(ref, out_dir)
    return EmbedResult(out, ident.engine, ident.dim, ident.metric, ident.count, reference, left_out)


def _embed_photos(src: Path, face: FaceConfig, config: EmbedConfig, progress, cancel, pool):
    """The identity of the photos a raw folder's intake and selection keep (never a stranger, a duplicate or
    a blurred photo: preprocess.identity_photos), the photo nearest it, and every photo left out and why."""
    from preprocess import PreprocessConfig
    from preprocess.identity_photos import identity_photos

    from ..faces.analysis import embedder_model

    fa = get_face_analysis(face)
    photos = identity_photos(src, None, PreprocessConfig(top_k=config.top_k, min_photos=config.min_photos, face=face),
                             min_photos=config.min_photos, progress=progress, pool=pool, cancel=cancel)
    # The recogniser's manifest name (arcface -> arcface-buffalo): adapters check it (models.adapters).
    ident = FaceIdentity.from_vectors(photos.vectors, photos.names, embedder_model(face.embedder), fa.metric)
    return ident, photos.reference, tuple(photos.left_out)
