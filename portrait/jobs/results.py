"""What each job returns: dataclasses whose `to_dict()` is the JSON `--json` prints and the API returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..pipeline import RunResult

__all__ = ["BatchResult", "CreateResult", "EmbedResult", "GenerateResult", "PreprocessResult", "RunResult", "TrainResult"]


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
