"""The photos an identity embedding is averaged from: never a stranger's.

    photos = identity_photos(Path("photos"), work_dir=Path("out/embed"))
    FaceIdentity.from_vectors(photos.vectors, photos.names, engine, metric)   # portrait.identity

`source` is either a preprocessed training set (a folder with `train/`, as `portrait preprocess`
writes it), whose crops were already judged and selected, or a raw photo folder, which
goes through the same intake and selection as `portrait preprocess` first: other people
(`different_person`), duplicates, blurry, turned or unreadable photos are left out, and only the
selected photos' embeddings are kept. `left_out` names every photo not used and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from portrait.errors import NotEnoughPhotosError
from portrait.progress import ProgressCallback, report

from .config import PreprocessConfig
from .dataset import REPORT_NAME, TRAIN_DIR


@dataclass
class IdentityPhotos:
    vectors: list[np.ndarray]  # one identity embedding per photo used
    names: list[str]  # the photos used, best first
    reference: Optional[Path]  # a photo (or training crop) of the person with a clear face, for fusion
    source_kind: str  # "training_set" | "photos"
    left_out: list[dict] = field(default_factory=list)  # [{"file", "reasons", "message"}]
    report_path: Optional[Path] = None  # report.json of the intake run on a raw folder

    def to_dict(self) -> dict:
        return {"source_kind": self.source_kind, "used": list(self.names),
                "reference": None if self.reference is None else str(self.reference),
                "left_out": list(self.left_out),
                "report": None if self.report_path is None else str(self.report_path)}


def is_training_set(folder: Path) -> bool:
    """A `portrait preprocess` output (or a training set laid out like one): a train/ folder of crops."""
    return (folder / TRAIN_DIR).is_dir()


def _from_training_set(folder: Path, config: PreprocessConfig, progress) -> IdentityPhotos:
    from portrait.faces import get_face_analysis
    from portrait.imageio import image_files, load_rgb

    fa = get_face_analysis(config.face)
    crops = image_files(folder / TRAIN_DIR)
    vectors, names = [], []
    for i, path in enumerate(crops):
        faces = fa.analyze(load_rgb(path), max_faces=1)
        report(progress, "embed", i + 1, len(crops))
        if faces and faces[0].embedding is not None and np.linalg.norm(faces[0].embedding) > 0:
            vectors.append(np.asarray(faces[0].embedding, np.float32))
            names.append(path.name)
    if not vectors:
        raise NotEnoughPhotosError(f"{folder / TRAIN_DIR}: no usable face in {len(crops)} training crop(s)")
    return IdentityPhotos(vectors, names, folder / TRAIN_DIR / names[0], "training_set")


def identity_photos(source: str | Path, work_dir: str | Path | None = None, config: PreprocessConfig | None = None,
                    *, min_photos: int = 1, progress: ProgressCallback | None = None, pool=None,
                    cancel=None) -> IdentityPhotos:
    """The photos of the person in `source` (a training set, or a raw folder judged and selected here,
    writing its report and crops under `work_dir` when given), with their embeddings. Raises
    NotEnoughPhotosError when fewer than `min_photos` photos of one person are usable."""
    from .run import run_preprocess

    folder = Path(source)
    config = config or PreprocessConfig()
    if is_training_set(folder):
        return _from_training_set(folder, config, progress)
    result = run_preprocess(folder, None if work_dir is None else Path(work_dir), config, progress=progress, pool=pool,
                            cancel=cancel)
    used = [f for f in result.selected if f in result.embeddings]
    left_out = [{"file": p.file, "reasons": list(p.reasons) or ["not_selected"], "message": p.message}
                for p in result.photos if p.file not in used]
    if len(used) < min_photos:
        raise NotEnoughPhotosError(f"{folder}: only {len(used)} usable photo(s) of one person, at least {min_photos} "
                                   "needed (" + "; ".join(f"{x['file']}: {', '.join(x['reasons'])}" for x in left_out)
                                   + ")")
    by_file = {p.file: p for p in result.photos}
    reference = None
    if result.reference is not None:
        ref = by_file[result.reference]
        reference = (result.train_dir / ref.crop) if result.train_dir is not None and ref.crop else ref.path
    order = ([result.reference] if result.reference in used else []) + [f for f in used if f != result.reference]
    return IdentityPhotos([np.asarray(result.embeddings[f], np.float32) for f in order], order, reference, "photos",
                          left_out, None if work_dir is None else Path(work_dir) / REPORT_NAME)
