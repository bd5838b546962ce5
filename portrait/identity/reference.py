"""The reference photo an identity carries with it: `reference.png` beside identity.safetensors (from
`portrait train`) or identity_embedding.safetensors (from `portrait embed`). `portrait generate` fuses
the user's face from it before painting, so an identity folder is usable on its own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..paths import train_folder

REFERENCE_NAME = "reference.png"


def trainset_reference(trainset: str | Path) -> Path | None:
    """The training image of a preprocess output that shows its reference face (report.json's `reference`,
    through that photo's `crop`); else the first image metadata.jsonl lists; None when there is none."""
    root = Path(trainset)
    train = train_folder(root)
    try:
        report = json.loads((root / "report.json").read_text(encoding="utf-8"))
        ref = report.get("reference")
        crop = next((p.get("crop") for p in report.get("photos", []) if p.get("file") == ref), None)
        if crop and (train / crop).is_file():
            return train / crop
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    try:
        for line in (train / "metadata.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                first = train / json.loads(line)["file_name"]
                return first if first.is_file() else None
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def write_reference(photo: str | Path | None, out_dir: str | Path) -> Path | None:
    """Copy `photo` to out_dir/reference.png (re-encoded as PNG when it is another format); None if no photo."""
    if photo is None or not Path(photo).is_file():
        return None
    dst = Path(out_dir) / REFERENCE_NAME
    dst.parent.mkdir(parents=True, exist_ok=True)
    if Path(photo).resolve() == dst.resolve():
        return dst
    if Path(photo).suffix.lower() == ".png":
        shutil.copyfile(photo, dst)
    else:
        from ..imageio import load_rgb, save_image

        save_image(load_rgb(photo), dst)
    return dst
