"""From a person's uploaded photos to a scored, explained training set (offline, CPU).

    from preprocess import PreprocessConfig, run_preprocess
    result = run_preprocess(Path("photos"), Path("out"), PreprocessConfig(top_k=12))
    result.report        # report.json's content (DESIGN.md section 5)
    result.selected      # the training photos, best first; result.reference: the reference photo

Stages: intake (decode, EXIF, limits) → analyse (faces, identity, scores) → select (verdicts with
stable reason codes, top-k, reference) → crops (aligned, training resolution, optional background
removal) → dataset (train/*.png + metadata.jsonl, report.json).
"""

from .config import REASON_ADVICE, REASON_TEXT, REASONS, PreprocessConfig, describe
from .run import run_preprocess
from .types import PhotoResult, PreprocessedPhotos, verdict_message

__all__ = ["REASONS", "REASON_ADVICE", "REASON_TEXT", "PhotoResult", "PreprocessConfig", "PreprocessedPhotos",
           "describe", "run_preprocess", "verdict_message"]
