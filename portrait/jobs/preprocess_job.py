"""The preprocess job: photos in, a scored, explained training set out (report.json, train/)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from preprocess import PreprocessConfig, run_preprocess, verdict_message

from ..progress import CancelToken, ProgressCallback
from .results import PreprocessResult


def preprocess(photos: Path | Sequence[Path], out_dir: Path, config: PreprocessConfig | None = None, *,
               progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
               pool=None) -> PreprocessResult:
    """Judge every photo and write out_dir/report.json and out_dir/train/ (crops + metadata.jsonl).

    Too few accepted photos is not an error: the result says `ok=False` and why (every photo's reasons
    are in the report). `pool`: a preprocess.workers.WorkerPool the caller holds (a worker process)."""
    config = config or PreprocessConfig()
    result = run_preprocess(photos, Path(out_dir), config, progress=progress, pool=pool, cancel=cancel)
    ok = result.accepted_count >= config.min_photos
    return PreprocessResult(result.report, ok, verdict_message(result, config.min_photos), Path(out_dir), result)
