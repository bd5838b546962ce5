"""The training set on disk: DIR/train/*.png + metadata.jsonl, and DIR/report.json.

metadata.jsonl holds one `{"file_name": ..., "text": ...}` per crop, the layout diffusers'
`ImageFolder` ("imagefolder" datasets) and kohya-style scripts read. report.json follows DESIGN.md
section 5: photos[{file, accepted, reasons, face{box, landmarks5, yaw, pitch, roll}, scores{identity,
quality, sharpness, exposure, face_size, pose, total}}], selected, reference, engines; plus summary.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from portrait.paths import TRAIN_DIR

from .config import REASONS, PreprocessConfig
from .types import PhotoResult

REPORT_NAME = "report.json"
METADATA_NAME = "metadata.jsonl"


def crop_name(index: int, file: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(file).stem).strip("_") or "photo"
    return f"{index:02d}_{stem[:60]}.png"


def write_png(path: Path, image: np.ndarray) -> None:
    """Fast PNG write (OpenCV releases the GIL while compressing)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError(f"cannot encode {path}")
    path.write_bytes(buf.tobytes())


def prepare_train_dir(out_dir: Path) -> Path:
    """DIR/train, emptied of an earlier run's crops and metadata."""
    train = Path(out_dir) / TRAIN_DIR
    train.mkdir(parents=True, exist_ok=True)
    for old in list(train.glob("*.png")) + [train / METADATA_NAME]:
        if old.exists():
            old.unlink()
    return train


def write_metadata(train_dir: Path, entries: Sequence[tuple[str, str]]) -> Path:
    path = Path(train_dir) / METADATA_NAME
    with path.open("w", encoding="utf-8") as f:
        for name, text in entries:
            f.write(json.dumps({"file_name": name, "text": text}, ensure_ascii=False) + "\n")
    return path


def summary(photos: Sequence[PhotoResult], selected: Sequence[str]) -> dict:
    by_reason = Counter(r for p in photos for r in p.reasons)
    return {
        "total": len(photos),
        "accepted": sum(p.accepted for p in photos),
        "rejected": sum(not p.accepted for p in photos),
        "selected": len(selected),
        "by_reason": {r: by_reason[r] for r in REASONS if by_reason[r]},
    }


def build_report(photos: Sequence[PhotoResult], selected: Sequence[str], reference: str | None, engines: dict,
                 config: PreprocessConfig, caption: str, train_dir: Path | None, skipped: Sequence[dict] = ()) -> dict:
    return {
        "photos": [p.to_dict() for p in photos],
        "skipped": [dict(s) for s in skipped],  # files in the folder that got no verdict, and why
        "selected": list(selected),
        "reference": reference,
        "engines": dict(engines),
        "summary": summary(photos, selected),
        "config": {"top_k": config.top_k, "min_photos": config.min_photos, "resolution": config.resolution,
                   "remove_background": config.remove_background, "trigger_word": config.trigger_word,
                   "class_word": config.class_word},
        "caption": caption,
        "train_dir": TRAIN_DIR if train_dir is not None else None,
    }


def write_report(out_dir: Path, report: dict) -> Path:
    path = Path(out_dir) / REPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path
