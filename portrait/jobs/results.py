"""What each job returns: dataclasses whose `to_dict()` is the JSON `--json` prints and the API returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..engines import EngineChoice

__all__ = ["BatchResult", "CreateResult", "EmbedResult", "GenerateResult", "PreprocessResult", "RunResult",
           "TemplateOutput", "TrainResult"]


@dataclass
class TemplateOutput:
    template: str
    file: str
    reference: str
    distance: float  # to the user's identity centroid, under the embedder's metric (lower = more alike)
    similarity: float  # 0..1, 1 = identical, 0.5 at the same-person threshold
    passed_bar: bool
    variants_tried: int
    timings: dict
    others: dict = field(default_factory=dict)  # slot -> distance of that slot's face to its own person
    slots: dict = field(default_factory=dict)  # slot -> {found, main_face, distance, passes}: the face seen there

    def to_dict(self) -> dict:
        d = asdict(self)
        d["others"] = {str(k): (None if not np.isfinite(v) else round(v, 4)) for k, v in self.others.items()}
        d["slots"] = {str(k): v for k, v in self.slots.items()}  # JSON keys: what result.json and the API hold
        d["distance"] = None if not np.isfinite(self.distance) else round(self.distance, 4)
        d["similarity"] = round(self.similarity, 4)
        return d


@dataclass
class RunResult:
    outputs: list[TemplateOutput]  # best first
    failures: list[dict]
    engines: list[EngineChoice]
    timings: dict
    preprocess: dict
    metric: str
    threshold: float
    result_file: Optional[Path] = None
    auto: dict = field(default_factory=dict)  # --template auto: the user's look and each choice's reasons

    def to_dict(self) -> dict:
        return {
            "outputs": [o.to_dict() for o in self.outputs],
            "failures": self.failures,
            "engines": {e.stage: e.to_dict() for e in self.engines},
            "likeness": {"metric": self.metric, "same_person_threshold": self.threshold,
                         "note": "distance: lower is more alike; similarity = 1 - distance / (2 x threshold)"},
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "preprocess": self.preprocess,
            **({"auto": self.auto} if self.auto else {}),
        }


@dataclass
class PreprocessResult:
    """report.json's content, whether enough photos were accepted, and the verdict line."""

    report: dict
    ok: bool
    message: str
    out_dir: Path
    result: Any = field(default=None, repr=False, compare=False)  # preprocess.PreprocessedPhotos (the photos)

    def to_dict(self) -> dict:
        return dict(self.report, ok=self.ok, message=self.message, out=str(self.out_dir))


@dataclass
class TrainResult:
    lora: Path
    kohya: Path
    report_file: Path
    report: dict = field(repr=False)  # training.json's content

    def to_dict(self) -> dict:
        rep = self.report
        return {"lora": str(self.lora), "kohya": str(self.kohya), "report": str(self.report_file),
                "steps": rep["config"]["steps"], "chosen": rep["chosen"], "merged": rep["merged"],
                "checkpoints": rep["checkpoints"], "timings": rep["timings"], "device": rep["device"],
                "reference": str(self.lora.parent / rep["reference"]) if rep.get("reference") else None}


@dataclass
class EmbedResult:
    file: Path
    engine: str
    dim: int
    metric: str
    photos: int
    reference: Optional[Path]
    left_out: tuple = ()  # raw folders: {"file", "reasons", "message"} for each photo not averaged in

    def to_dict(self) -> dict:
        return {"file": str(self.file), "engine": self.engine, "dim": self.dim, "metric": self.metric,
                "photos": self.photos, "reference": str(self.reference) if self.reference else None,
                "left_out": list(self.left_out)}


@dataclass
class GenerateResult:
    identity: str
    identity_kind: str
    identity_engine: Optional[str]
    reference: str
    base_model: str
    outputs: list[dict]  # per template: template, file, seed, identity, crop, controlnets, timings
    result_file: Optional[Path] = None  # generate.json

    def to_dict(self) -> dict:
        return {"identity": self.identity, "identity_kind": self.identity_kind, "identity_engine": self.identity_engine,
                "reference": self.reference, "base_model": self.base_model, "outputs": self.outputs}


@dataclass
class BatchResult:
    rows: list[dict]  # per row: name, photos, status (done | failed), result / error
    summary_file: Optional[Path] = None  # batch.json

    @property
    def all_failed(self) -> bool:
        return bool(self.rows) and all(r["status"] == "failed" for r in self.rows)

    def to_dict(self) -> dict:
        return {"rows": self.rows, "summary": str(self.summary_file) if self.summary_file else None}


@dataclass
class CreateResult:
    """create.json: per style, its candidates ranked by likeness (rank 1 first), each with its file and seed."""

    identity: str
    identity_kind: str
    engine: Optional[str]
    base_model: str
    reference: str
    styles: list  # [{"style", "outputs": [{"rank", "file", "seed", "distance", "similarity", "passed_bar", ...}]}]
    result_file: Path

    def to_dict(self) -> dict:
        # `outputs`: every candidate in one list (each style's ranked in turn), the shape run and generate give
        # (the service's result rows read it; `template` names the style there).
        outputs = [{"template": s["style"], "style": s["style"], "file": o["path"], **o}
                   for s in self.styles for o in s["outputs"]]
        return {"identity": self.identity, "identity_kind": self.identity_kind, "engine": self.engine,
                "base_model": self.base_model, "reference": self.reference, "styles": self.styles,
                "outputs": outputs, "result": str(self.result_file)}
