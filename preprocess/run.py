"""The preprocess orchestrator: intake → analyse → select → crops → dataset.

    from preprocess import PreprocessConfig, run_preprocess
    result = run_preprocess(Path("photos"), Path("out"), PreprocessConfig(top_k=10), progress=callback)

Speed: photos are decoded at analysis size (`max_side`, with JPEG draft decoding) in worker threads
while the main thread analyses the previous photo; faces are first looked for on a `coarse_side`
copy and only searched again at analysis size when the coarse pass cannot rule out smaller faces;
only the dominant face is embedded. Crops are cut from a fresh decode of each *selected* photo at
the smallest scale that keeps the face at training resolution (full resolution at most), so a
12 MP photo is decoded in full only when its face needs every pixel.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Optional, Sequence

import cv2
import numpy as np

from portrait.errors import PortraitError
from portrait.faces import Face, get_face_analysis
from portrait.faces.analysis import FaceAnalysis
from portrait.progress import ProgressCallback, report

from . import scoring
from .background import choose_engine, remove_background
from .captions import caption
from .config import REASON_TEXT, PreprocessConfig
from .crops import face_in_crop, make_crop
from .dataset import build_report, crop_name, prepare_train_dir, write_metadata, write_png, write_report
from .duplicates import find_duplicates, perceptual_hash
from .intake import IntakeResult, decode_for_crop, intake_photo, list_photos
from .selection import HARD_REASONS, choose_reference, face_reasons, order_reasons, select_top_k
from .types import SCORE_KEYS, PhotoResult, PreprocessResult

DETECTABLE_PX = 80  # smallest face (px) the default detector finds without upsampling


@dataclass
class _Analysis:
    """What analysing one photo found (internal)."""

    intake: IntakeResult
    reason: Optional[str] = None  # a hard reason (unreadable, too_small, no_face, multiple_faces, ...)
    message: str = ""
    face: Optional[Face] = None  # dominant face, original coordinates
    faces: int = 0
    embedding: Optional[np.ndarray] = None
    hash: Optional[np.ndarray] = None
    scores: dict = field(default_factory=lambda: {k: None for k in SCORE_KEYS})


# -- intake ---------------------------------------------------------------------------------------
def _prefetch(files: Sequence[Path], root: Path | None, config: PreprocessConfig,
              timings: dict) -> Iterator[IntakeResult]:
    """Intake results in order, decoded `workers` photos ahead in threads (Pillow releases the GIL)."""

    def job(p: Path) -> IntakeResult:
        t = time.perf_counter()
        r = intake_photo(p, config, root)
        r.facts["decode_s"] = time.perf_counter() - t
        return r

    workers = max(1, config.workers)
    with ThreadPoolExecutor(workers, thread_name_prefix="intake") as pool:
        pending: deque = deque()
        it = iter(files)
        for p in it:
            pending.append(pool.submit(job, p))
            if len(pending) > workers:
                break
        while pending:
            r = pending.popleft().result()
            timings["intake"] = timings.get("intake", 0.0) + r.facts.pop("decode_s", 0.0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(job, nxt))
            yield r


# -- analysis ---------------------------------------------------------------------------------------
def _keep(faces: list[Face], min_score: float) -> list[Face]:
    return sorted((f for f in faces if f.score >= min_score), key=lambda f: -f.size)


def detect_faces(fa: FaceAnalysis, image: np.ndarray, config: PreprocessConfig) -> list[Face]:
    """Faces (largest first, no embeddings) in `image` coordinates, with as little work as possible.

    Coarse pass on a `coarse_side` copy; it is enough when its largest face is at least twice the
    detector's minimum, because then every face that could compete with it (>= dominance_ratio x its
    size) is detectable at that scale too. Otherwise the full analysis image, then (no face at all)
    one upsampled pass so small faces are reported as `face_too_small` rather than `no_face`."""
    h, w = image.shape[:2]
    min_score = config.detection_score()
    s = min(1.0, config.coarse_side / max(h, w))
    if s < 1.0:
        small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        faces = _keep(fa.analyze(small, embed=False), min_score)
        if faces and faces[0].size * config.dominance_ratio >= DETECTABLE_PX:
            return [f.scaled(1.0 / s) for f in faces]
    faces = _keep(fa.analyze(image, embed=False), min_score)
    if faces or not config.face.detector.startswith("dlib"):
        return faces
    fine = replace(config.face, upsample=config.face.upsample + 1,
                   detect_max_side=max(config.face.detect_max_side, max(h, w)))
    return _keep(get_face_analysis(fine).analyze(image, embed=False), min_score)


def analyse_photo(fa: FaceAnalysis, intake: IntakeResult, config: PreprocessConfig) -> _Analysis:
    a = _Analysis(intake=intake)
    if not intake.ok:
        a.reason, a.message = intake.reason, intake.message
        return a
    img = intake.pixels
    a.hash = perceptual_hash(img)
    faces = detect_faces(fa, img, config)
    a.faces = len(faces)
    if not faces:
        a.reason, a.message = "no_face", "no face was found"
        return a
    face = faces[0]
    a.face = face.scaled(1.0 / intake.scale)
    if len(faces) > 1 and faces[1].size >= config.dominance_ratio * face.size:
        a.reason = "multiple_faces"
        a.message = f"{len(faces)} faces, none clearly larger than the others"
        return a
    face.embedding = fa.embed(img, face)
    a.face.embedding = a.embedding = face.embedding
    raw = scoring.sharpness_raw(scoring.face_chip(img, face))
    a.scores.update(
        sharpness=scoring.sharpness_score(raw),
        exposure=scoring.exposure_score(img, face),
        face_size=scoring.face_size_score(a.face.size, config),
        pose=scoring.pose_score(face, config),
    )
    a.scores["quality"] = scoring.quality_score(a.scores["sharpness"], a.scores["exposure"], a.scores["face_size"])
    return a


# -- verdicts ---------------------------------------------------------------------------------------
def _verdicts(analyses: list[_Analysis], fa: FaceAnalysis, config: PreprocessConfig, names: list[str]
              ) -> tuple[list[PhotoResult], Optional[np.ndarray], float]:
    threshold = config.identity_threshold or fa.same_person_threshold
    with_face = [a for a in analyses if a.embedding is not None]
    good = [a for a in with_face if (a.scores["sharpness"] or 0) >= config.blur_threshold]
    pool = good if len(good) >= 2 else with_face
    centroid = scoring.robust_centroid([a.embedding for a in pool], fa.metric, threshold)
    photos: list[PhotoResult] = []
    for a, name in zip(analyses, names):
        p = PhotoResult(file=name, path=a.intake.path, face=a.face, facts=dict(a.intake.facts, faces=a.faces))
        p.scores.update(a.scores)
        if a.reason is not None:
            p.reasons, p.message = [a.reason], a.message
        elif a.embedding is not None and a.face is not None:
            dist = fa.distance(a.embedding, centroid)
            p.scores["identity"] = scoring.identity_score(dist, threshold)
            p.scores["total"] = scoring.total_score(p.scores["identity"], p.scores["quality"], p.scores["pose"])
            w, h = a.intake.facts["original_size"]
            p.reasons = face_reasons(p.scores, a.face.size, a.face.size / min(w, h), a.face.yaw, a.face.pitch,
                                     a.face.roll, dist, threshold, config)
            p.facts["identity_distance"] = round(dist, 4)
            p.message = _message(p, a, dist, threshold, config)
        photos.append(p)
    rank = [(0.0 if p.reasons else 1.0) + float(p.scores["total"] or 0.0) for p in photos]
    dups = find_duplicates([a.hash for a in analyses], rank, config.duplicate_bits)
    for i, keep in dups.items():
        photos[i].reasons = order_reasons(photos[i].reasons + ["duplicate"])
        if photos[i].reasons[0] == "duplicate":
            photos[i].message = f"the same photo as {photos[keep].file}"
    for p in photos:
        p.reasons = order_reasons(p.reasons)
        p.accepted = not p.reasons
    return photos, centroid, threshold


def _message(p: PhotoResult, a: _Analysis, dist: float, threshold: float, config: PreprocessConfig) -> str:
    if not p.reasons:
        return ""
    r = p.reasons[0]
    if r == "different_person":
        return f"identity distance {dist:.2f} to the other photos (same person below {threshold:.2f})"
    if r == "face_too_small":
        return f"face is {a.face.size:.0f} px; at least {config.min_face_px} px and {config.min_face_fraction:.0%} of the photo needed"
    if r == "extreme_pose":
        return f"head turned (yaw {a.face.yaw:.0f}°, pitch {a.face.pitch:.0f}°, roll {a.face.roll:.0f}°)"
    if r == "blurry":
        return f"face sharpness {p.scores['sharpness']:.2f} (at least {config.blur_threshold:.2f} needed)"
    if r == "bad_exposure":
        return f"face exposure {p.scores['exposure']:.2f} (at least {config.exposure_threshold:.2f} needed)"
    return REASON_TEXT[r][1]


# -- crops ----------------------------------------------------------------------------------------------
def _crop_one(p: PhotoResult, config: PreprocessConfig, full: bool, background: Optional[str]):
    """Decode a selected photo at the scale its crop needs, cut the crop; return (crop, image, face)."""
    need = scoring.needed_face_px(config) * 1.25 / max(p.face.size, 1.0)
    img, scale = decode_for_crop(p.path, config, 1.0 if full else need)
    face = p.face.scaled(scale)
    crop, m = make_crop(img, face, config)
    if background is not None:
        crop, _, _ = remove_background(crop, face_in_crop(face, m), background, device=config.face.device)
    return crop, (img if full else None), face


def run_preprocess(photos: Path | str | list, out_dir: Path | str | None = None,
                   config: PreprocessConfig = PreprocessConfig(),
                   progress: ProgressCallback | None = None) -> PreprocessResult:
    """Judge every photo, select the training set and (with `out_dir`) write train/ and report.json.

    `out_dir=None` analyses only and writes nothing. Raises PortraitError when no photo files are found;
    too few accepted photos is not an error here (see `result.accepted_count` against `config.min_photos`).
    """
    t_start = time.perf_counter()
    files, root = list_photos(photos)
    if not files:
        raise PortraitError(f"no photos found in {photos} (looked for .jpg, .jpeg, .png, .webp, .heic)")
    names = [_unique(f, root, i, files) for i, f in enumerate(files)]
    fa = get_face_analysis(config.face)
    timings: dict[str, float] = {}
    n = len(files)

    analyses: list[_Analysis] = []
    t_analyse = 0.0
    for i, intake in enumerate(_prefetch(files, root, config, timings)):
        intake.file = names[i]
        report(progress, "intake", i + 1, n)
        t = time.perf_counter()
        analyses.append(analyse_photo(fa, intake, config))
        intake.pixels = None  # release the analysis image
        t_analyse += time.perf_counter() - t
        report(progress, "analyse", i + 1, n)
    timings["analyse"] = t_analyse

    t = time.perf_counter()
    report(progress, "select", 0, 1)
    results, centroid, _ = _verdicts(analyses, fa, config, names)
    selected = select_top_k(results, config.top_k)
    ref = choose_reference(selected)
    report(progress, "select", 1, 1)
    timings["select"] = time.perf_counter() - t

    t = time.perf_counter()
    background = choose_engine(config.background_engine) if config.remove_background else None
    engines = dict(fa.engines(), background=background, decoder="pillow")
    text = caption(config)
    train_dir = prepare_train_dir(Path(out_dir)) if out_dir is not None else None
    ref_image, ref_face = None, None
    jobs = [p for p in selected if out_dir is not None or p is ref]
    if jobs:
        done = 0
        with ThreadPoolExecutor(max(1, config.workers), thread_name_prefix="crops") as pool:
            futures = [pool.submit(_crop_one, p, config, p is ref, background) for p in jobs]
            entries = []
            for i, (p, fut) in enumerate(zip(jobs, futures)):
                crop, image, face = fut.result()
                if p is ref:
                    ref_image, ref_face = image, face
                if train_dir is not None:
                    p.crop = crop_name(i + 1, p.file)
                    write_png(train_dir / p.crop, crop)
                    entries.append((p.crop, text))
                done += 1
                report(progress, "crops", done, len(jobs))
        if train_dir is not None:
            write_metadata(train_dir, entries)
    elif out_dir is not None:
        write_metadata(train_dir, [])
    timings["crops"] = time.perf_counter() - t

    accepted = [p for p in results if p.accepted]
    embeddings = {p.file: p.face.embedding for p in accepted}
    if accepted:
        centroid = scoring.robust_centroid(list(embeddings.values()), fa.metric,
                                           config.identity_threshold or fa.same_person_threshold)
    rep = build_report(results, [p.file for p in selected], ref.file if ref else None, engines, config, text,
                       train_dir)
    if out_dir is not None:
        write_report(Path(out_dir), rep)
    timings["total"] = time.perf_counter() - t_start
    return PreprocessResult(
        photos=results, selected=[p.file for p in selected], reference=ref.file if ref else None,
        reference_face=ref_face, reference_image=ref_image, embeddings=embeddings, centroid=centroid,
        report=rep, accepted_count=len(accepted), train_dir=train_dir, engines=engines, timings=timings,
    )


def _unique(path: Path, root: Path | None, i: int, files: Sequence[Path]) -> str:
    from .intake import display_name

    name = display_name(path, root)
    earlier = [display_name(f, root) for f in files[:i]]
    return name if name not in earlier else f"{name}#{earlier.count(name) + 1}"
