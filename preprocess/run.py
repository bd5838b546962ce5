"""The preprocess orchestrator: intake → analyse → select → crops → dataset.

    from preprocess import PreprocessConfig, run_preprocess
    result = run_preprocess(Path("photos"), Path("out"), PreprocessConfig(top_k=10), progress=callback)

Speed: photos are decoded at analysis size (`max_side`, with JPEG draft decoding) and analysed in a
pool of worker processes (preprocess.workers.WorkerPool: the caller's, or one for this call, for
batches of `POOL_MIN_PHOTOS` or more; dlib holds the GIL, so threads cannot run two analyses at once);
small batches run in this process with decoding in threads. Faces are first looked for on a `coarse_side`
copy and only searched again at analysis size when the coarse pass cannot rule out smaller faces;
only the dominant face is embedded. When the analysis image already holds the face at training
resolution the crop is cut from it right away (a 512² crop is small to keep); otherwise a *selected*
photo is decoded again at the smallest scale that keeps the face at training resolution (full
resolution at most). `result.reference_image` (full resolution) is decoded only when first used.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from portrait.errors import NoPhotosError
from portrait.faces import get_face_analysis
from portrait.faces.analysis import FaceAnalysis
from portrait.models.manifest import get_manifest
from portrait.progress import ProgressCallback, check_cancel, report

from . import scoring
from .analysis import Analysis, analyse_photo
from .background import choose_engine, remove_background
from .captions import caption
from .config import REASON_TEXT, PreprocessConfig
from .crops import face_in_crop, make_crop_with_padding
from .dataset import build_report, crop_name, prepare_train_dir, write_metadata, write_png, write_report
from .duplicates import find_face_duplicates
from .intake import IntakeResult, decode_for_crop, intake_photo, list_photos
from .orientation import turn_text
from .restore import needs_restoring, restore_engine, restored_crop, retouched
from .selection import blur_limit, choose_reference, face_reasons, order_reasons, select_top_k
from .types import PhotoResult, PreprocessedPhotos
from .workers import WorkerPool, analyse_in_worker, use_pool


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


def _analyse_here(fa: FaceAnalysis, files: Sequence[Path], root: Path | None, config: PreprocessConfig,
                  timings: dict, progress: ProgressCallback | None, cancel=None) -> list[Analysis]:
    """Intake and analysis in this process: decoding `workers` photos ahead in threads."""
    analyses: list[Analysis] = []
    n, t_analyse = len(files), 0.0
    for i, intake in enumerate(_prefetch(files, root, config, timings)):
        check_cancel(cancel, "preprocess cancelled")
        report(progress, "intake", i + 1, n)
        t = time.perf_counter()
        analyses.append(analyse_photo(fa, intake, config))
        intake.pixels = None  # release the analysis image
        t_analyse += time.perf_counter() - t
        report(progress, "analyse", i + 1, n)
    timings["analyse"] = t_analyse
    return analyses


def _analyse_in_workers(pool: "WorkerPool", files: Sequence[Path], root: Path | None, config: PreprocessConfig,
                        timings: dict, progress: ProgressCallback | None, cancel) -> list[Analysis]:
    """Intake + analysis of every photo in the pool's worker processes; progress reported here as photos
    complete, `cancel` checked between them (the photos not started yet are dropped). A photo whose worker
    failed is analysed again in this process, so a real error surfaces with its type."""
    n = len(files)
    try:
        executor = pool.executor()
        futures = {executor.submit(analyse_in_worker, p, root, config): i for i, p in enumerate(files)}
    except Exception:  # no processes on this platform / sandbox: analyse here
        pool.close()
        return _analyse_here(get_face_analysis(config.face), files, root, config, timings, progress, cancel)
    out: list[Optional[Analysis]] = [None] * n
    t_intake = t_analyse = 0.0
    done = 0
    try:
        for fut in as_completed(futures):
            check_cancel(cancel, "preprocess cancelled")
            i = futures[fut]
            try:
                out[i], ti, ta = fut.result()
            except Exception:
                if isinstance(fut.exception(), BrokenProcessPool):
                    pool.close()
                t0 = time.perf_counter()
                intake = intake_photo(files[i], config, root)
                t1 = time.perf_counter()
                out[i] = analyse_photo(get_face_analysis(config.face), intake, config)
                intake.pixels = None
                ti, ta = t1 - t0, time.perf_counter() - t1
            t_intake += ti
            t_analyse += ta
            done += 1
            report(progress, "intake", done, n)
            report(progress, "analyse", done, n)
    finally:
        for fut in futures:
            fut.cancel()
    timings["intake"], timings["analyse"] = t_intake, t_analyse
    return out  # type: ignore[return-value]


# -- verdicts ---------------------------------------------------------------------------------------
def _verdicts(analyses: list[Analysis], fa: FaceAnalysis, config: PreprocessConfig, names: list[str]
              ) -> tuple[list[PhotoResult], Optional[np.ndarray], float]:
    threshold = config.identity_threshold or fa.same_person_threshold
    with_face = [a for a in analyses if a.embedding is not None]
    sharp_limit = blur_limit([a.sharp_raw for a in with_face if a.reason is None], config)
    good = [a for a in with_face if (a.sharp_raw or 0) >= sharp_limit]
    pool = good if len(good) >= 2 else with_face
    centroid = scoring.robust_centroid([a.embedding for a in pool], fa.metric, threshold)
    photos: list[PhotoResult] = []
    for a, name in zip(analyses, names):
        p = PhotoResult(file=name, path=a.intake.path, face=a.face, facts=dict(a.intake.facts, faces=a.faces))
        p.scores.update(a.scores)
        if a.sharp_raw is not None:
            p.facts["sharpness_raw"] = round(a.sharp_raw, 4)
        if a.face is not None and a.tilted == 0:
            p.facts["crop_padding"] = round(a.padding, 4)
        if a.reason is not None:
            p.reasons, p.message = [a.reason], a.message
            if a.reason == "no_face":
                p.message += _blur_hint(a, with_face, config)
        elif a.embedding is not None and a.face is not None:
            dist = fa.distance(a.embedding, centroid)
            p.scores["identity"] = scoring.identity_score(dist, threshold)
            p.scores["total"] = scoring.total_score(p.scores["identity"], p.scores["quality"], p.scores["pose"])
            if a.padding > config.max_crop_padding:  # the crop would be partly made up: a worse training photo
                p.scores["total"] -= a.padding
            w, h = a.intake.facts["original_size"]
            p.reasons = face_reasons(p.scores, a.face.size, a.face.size / min(w, h), a.face.yaw, a.face.pitch,
                                     a.face.roll, dist, threshold, config, a.sharp_raw, sharp_limit)
            p.facts["identity_distance"] = round(dist, 4)
            p.message = _message(p, a, dist, threshold, config, sharp_limit, with_face)
        photos.append(p)
    rank = [(0.0 if p.reasons else 1.0) + float(p.scores["total"] or 0.0) for p in photos]
    dups = find_face_duplicates([a.signature for a in analyses], [a.embedding for a in analyses],
                                [a.hash for a in analyses], rank, fa.distance,
                                max_embedding=config.duplicate_embedding, face_bits=config.duplicate_face_bits,
                                max_lab=config.duplicate_lab, frame_bits=config.duplicate_bits)
    for i, keep in dups.items():
        photos[i].reasons = order_reasons(photos[i].reasons + ["duplicate"])
        if photos[i].reasons[0] == "duplicate":
            photos[i].message = f"the same photo as {photos[keep].file} (the face matches, whatever the framing)"
    for p in photos:
        p.reasons = order_reasons(p.reasons)
        p.accepted = not p.reasons
    return photos, centroid, threshold


def _blur_hint(a: Analysis, with_face: list, config: PreprocessConfig) -> str:
    """For a photo without a face: say so when the whole photo is far less sharp than the set's photos
    with faces (a face blurred past finding reads as no face at all)."""
    frames = [x.frame_sharp for x in with_face if x.frame_sharp is not None]
    if a.frame_sharp is None or len(frames) < 3:
        return ""
    median = float(np.median(frames))
    if a.frame_sharp >= config.blur_relative * median:
        return ""
    return (f"; the whole photo is far less sharp than the others (sharpness {a.frame_sharp:.2f}, their median "
            f"{median:.2f}): it is probably too blurred for a face to be found")


def _message(p: PhotoResult, a: Analysis, dist: float, threshold: float, config: PreprocessConfig,
             sharp_limit: float, with_face: list) -> str:
    turned = turn_text(a.turned)
    if not p.reasons:
        return turned[0].upper() + turned[1:] if turned else ""
    text = _reason_message(p, a, dist, threshold, config, sharp_limit, with_face)
    return f"{text}; {turned}" if turned else text


def _reason_message(p: PhotoResult, a: Analysis, dist: float, threshold: float, config: PreprocessConfig,
                    sharp_limit: float, with_face: list) -> str:
    r = p.reasons[0]
    if r == "different_person":
        return f"identity distance {dist:.2f} to the other photos (same person below {threshold:.2f})"
    if r == "face_too_small":
        w, h = a.intake.facts["original_size"]
        short = min(w, h)
        if a.face.size < config.min_face_px:
            return f"face is {a.face.size:.0f} px, smaller than the {config.min_face_px} px needed"
        return (f"face is {a.face.size:.0f} px, {a.face.size / short:.1%} of the photo's shorter side ({short} px); "
                f"at least {config.min_face_fraction:.0%} ({config.min_face_fraction * short:.0f} px) needed")
    if r == "extreme_pose":
        found = f"; the face was found only on the photo rotated by {a.tilted:+.0f}°" if a.tilted else ""
        return (f"head turned or tilted too far (yaw {a.face.yaw:.0f}°, pitch {a.face.pitch:.0f}°, roll "
                f"{a.face.roll:.0f}°; the limits are |yaw| {config.max_yaw:.0f}°, |pitch| {config.max_pitch:.0f}°, "
                f"|roll| {config.max_roll:.0f}°){found}")
    if r == "blurry":
        vals = [x.sharp_raw for x in with_face if x.reason is None and x.sharp_raw is not None]
        rel = (f"{config.blur_relative:.0%} of this set's median {float(np.median(vals)):.2f}, and never below "
               f"{config.blur_floor:.2f}" if len(vals) >= 3 else "the floor for a set of fewer than 3 faces")
        return f"face sharpness {a.sharp_raw:.2f}; at least {sharp_limit:.2f} needed ({rel})"
    if r == "bad_exposure":
        return f"face exposure {p.scores['exposure']:.2f} (at least {config.exposure_threshold:.2f} needed)"
    return REASON_TEXT[r][1]


# -- crops ----------------------------------------------------------------------------------------------
def _crop_one(p: PhotoResult, a: Analysis, config: PreprocessConfig, background: Optional[str]) -> np.ndarray:
    """The training crop of a selected photo: cut during analysis, or from a fresh decode at the
    smallest scale that keeps the face at training resolution (full resolution at most)."""
    crop, crop_face = a.crop, a.crop_face
    manifest = get_manifest(config.face.models_dir)
    if crop is None:
        need = scoring.needed_face_px(config) * 1.25 / max(p.face.size, 1.0)
        img, scale = decode_for_crop(p.path, config, need, a.turned)
        face = p.face.scaled(scale)
        if needs_restoring(p.face.size, config):
            engine = restore_engine(config, manifest)
            crop, m, _ = restored_crop(img, face, config, engine, manifest, config.face.device)
            a.restored = engine
        else:
            crop, m, _ = make_crop_with_padding(img, face, config)
        crop_face = face_in_crop(face, m)
    if config.retouch_crops:
        crop, engine = retouched(crop, crop_face, manifest, config.face.device)
        a.retouched = engine
    if background is not None:
        crop, _, _ = remove_background(crop, crop_face, background, get_manifest(config.face.models_dir),
                                       device=config.face.device)
    return crop


def run_preprocess(photos: Path | str | list, out_dir: Path | str | None = None,
                   config: PreprocessConfig | None = None,
                   progress: ProgressCallback | None = None, *, pool: WorkerPool | None = None,
                   cancel=None) -> PreprocessedPhotos:
    """Judge every photo, select the training set and (with `out_dir`) write train/ and report.json.

    `out_dir=None` analyses only and writes nothing. Raises PortraitError when no photo files are found;
    too few accepted photos is not an error here (see `result.accepted_count` against `config.min_photos`).
    `pool`: the WorkerPool analysing batches of POOL_MIN_PHOTOS or more (a long-lived worker holds one);
    without one, such a batch gets a pool of its own for this call. `cancel` (anything with is_set()) is
    checked between photos and between crops: Cancelled, and report.json is not written.
    """
    config = config or PreprocessConfig()
    t_start = time.perf_counter()
    skipped: list[dict] = []
    files, root = list_photos(photos, skipped)
    if not files:
        raise NoPhotosError(f"no photos found in {photos}" + (f" (skipped: {', '.join(s['file'] for s in skipped)})"
                                                               if skipped else ""))
    names = [_unique(f, root, i, files) for i, f in enumerate(files)]
    fa = get_face_analysis(config.face)
    timings: dict[str, float] = {}
    n = len(files)

    t = time.perf_counter()
    if use_pool(config, n):
        # Load the models here: a missing file fails with its name, not in a worker.
        fa.detector, fa.landmarker, fa.embedder
        with (nullcontext(pool) if pool is not None else WorkerPool(config.workers)) as p:
            analyses = _analyse_in_workers(p.for_config(config, n), files, root, config, timings, progress, cancel)
    else:
        analyses = _analyse_here(fa, files, root, config, timings, progress, cancel)
    for a, name in zip(analyses, names):
        a.intake.file = name
    timings["analyse_wall"] = time.perf_counter() - t

    t = time.perf_counter()
    report(progress, "select", 0, 1)
    results, centroid, _ = _verdicts(analyses, fa, config, names)
    selected = select_top_k(results, config.top_k)
    ref = choose_reference(selected)
    report(progress, "select", 1, 1)
    timings["select"] = time.perf_counter() - t

    t = time.perf_counter()
    background = (choose_engine(config.background_engine, get_manifest(config.face.models_dir))
                  if config.remove_background else None)
    engines = dict(fa.engines(), background=background, decoder="pillow")
    text = caption(config)
    train_dir = prepare_train_dir(Path(out_dir)) if out_dir is not None else None
    if train_dir is not None:
        by_file = {name: a for name, a in zip(names, analyses)}
        entries = []
        with ThreadPoolExecutor(max(1, config.workers), thread_name_prefix="crops") as threads:
            def job(i: int, p: PhotoResult) -> None:
                p.crop = crop_name(i + 1, p.file)
                a = by_file[p.file]
                if a.crop_png is not None and background is None and not config.retouch_crops:
                    (train_dir / p.crop).write_bytes(a.crop_png)
                else:
                    write_png(train_dir / p.crop, _crop_one(p, a, config, background))
                for key in ("restored", "retouched"):
                    if getattr(a, key):
                        p.facts[key] = getattr(a, key)

            futures = [threads.submit(job, i, p) for i, p in enumerate(selected)]
            for i, (p, fut) in enumerate(zip(selected, futures)):
                if cancel is not None and cancel.is_set():
                    for f in futures:
                        f.cancel()
                    check_cancel(cancel, "preprocess cancelled")
                fut.result()
                entries.append((p.crop, text))
                report(progress, "crops", i + 1, len(selected))
        write_metadata(train_dir, entries)
    for a in analyses:
        a.crop = a.crop_png = None
    timings["crops"] = time.perf_counter() - t

    accepted = [p for p in results if p.accepted]
    embeddings = {p.file: p.face.embedding for p in accepted}
    if accepted:
        centroid = scoring.robust_centroid(list(embeddings.values()), fa.metric,
                                           config.identity_threshold or fa.same_person_threshold)
    rep = build_report(results, [p.file for p in selected], ref.file if ref else None, engines, config, text,
                       train_dir, skipped)
    if out_dir is not None:
        write_report(Path(out_dir), rep)
    timings["total"] = time.perf_counter() - t_start
    return PreprocessedPhotos(
        photos=results, selected=[p.file for p in selected], reference=ref.file if ref else None,
        reference_face=ref.face if ref else None, reference_path=ref.path if ref else None,
        embeddings=embeddings, centroid=centroid, report=rep, accepted_count=len(accepted), train_dir=train_dir,
        engines=engines, timings=timings,
        decode_limits={"max_pixels": config.max_pixels, "max_bytes": config.max_bytes},
    )


def _unique(path: Path, root: Path | None, i: int, files: Sequence[Path]) -> str:
    from .intake import display_name

    name = display_name(path, root)
    earlier = [display_name(f, root) for f in files[:i]]
    return name if name not in earlier else f"{name}#{earlier.count(name) + 1}"
