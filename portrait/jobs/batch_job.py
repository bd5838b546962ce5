"""The batch job: a studio's rows (one person's photos and templates each) run one after another; a
failing row never stops the rest. out_dir/<row name>/ per row, out_dir/batch.json for all."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping, Sequence

from ..batch import BatchRow, read_manifest, row_dir, row_status, safe_name, unique_names
from ..errors import Cancelled, ConfigError, PortraitError, internal_error
from ..pipeline import PortraitPipeline, RunConfig
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .results import BatchResult

log = logging.getLogger(__name__)
SUMMARY_NAME = "batch.json"


def batch_rows(rows: Path | str | Sequence[BatchRow | Mapping]) -> list[BatchRow]:
    """A CSV manifest (photos[,templates][,name]) or rows given as mappings {"photos", "templates" (a list or
    ';'-separated), "name"}: names made safe and unique, as the CSV's are."""
    if isinstance(rows, (str, Path)):
        return read_manifest(rows)
    given = []
    for i, r in enumerate(rows, 1):
        if isinstance(r, BatchRow):
            given.append((r.given_name, r.photos, r.templates))
            continue
        if not isinstance(r, Mapping) or not r.get("photos"):
            raise ConfigError(f"batch row {i}: needs 'photos' (a folder of the person's photos)")
        t = r.get("templates") or ()
        templates = tuple(x.strip() for x in (t.split(";") if isinstance(t, str) else t) if str(x).strip())
        given.append((str(r.get("name") or "").strip(), Path(r["photos"]).expanduser().absolute(), templates))
    names = unique_names(safe_name(g[0], i) for i, g in enumerate(given, 1))
    return [BatchRow(i, name, g[0], g[1], g[2]) for i, (g, name) in enumerate(zip(given, names), 1)]


def batch(rows: Path | str | Sequence[BatchRow | Mapping], out_dir: Path, config: RunConfig | None = None, *,
          progress: ProgressCallback | None = None, cancel: CancelToken | None = None, pool=None) -> BatchResult:
    """Every row checked first (photos folder, templates: a row that cannot start is `failed`), then run.
    Row status: done (every template gave a portrait), partial (some did), failed (none did)."""
    from ..preflight import check_photos_folder
    from ..templates import list_templates

    config = config or RunConfig()
    if config.identity:
        raise ConfigError("--identity is one person's LoRA, but batch rows are different people: run "
                          "`portrait run --identity` per person, or let batch use each row's FaceID embedding")
    rows = batch_rows(rows)
    out_dir = Path(out_dir)
    pipe = PortraitPipeline(config, pool=pool)  # options and models: a usage error stops the batch before any row
    every = [t.name for t in list_templates()]
    summary, planned = [], []
    for row in rows:  # every row checked before any photo is processed
        entry = {"name": row.name, "photos": str(row.photos)}
        if row.given_name != row.name:
            entry["given_name"] = row.given_name
        try:
            folder = row_dir(out_dir, row.name)
            check_photos_folder(row.photos)
            planned.append((row, entry, folder, pipe.check(list(row.templates) or every)))
        except PortraitError as exc:
            entry.update(status="failed", outputs=0, **exc.to_dict())
        summary.append(entry)
    for i, (row, entry, folder, templates) in enumerate(planned):
        check_cancel(cancel, "batch cancelled")
        report(progress, "batch", i, len(planned))
        _run_row(pipe, row, entry, folder, templates, progress, cancel)
    report(progress, "batch", len(planned), len(planned))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2))
    return BatchResult(summary, out_dir / SUMMARY_NAME)


def _run_row(pipe: PortraitPipeline, row: BatchRow, entry: dict, folder: Path, templates, progress, cancel) -> None:
    try:
        result = pipe.run(row.photos, templates, folder, progress=progress, cancel=cancel)
        entry.update(status=row_status(len(result.outputs), len(result.failures)),
                     result=str(result.result_file), outputs=len(result.outputs),
                     failures=len(result.failures),
                     best=result.outputs[0].to_dict() if result.outputs else None)
        if result.failures:
            entry["failed_templates"] = [f["template"] for f in result.failures]
    except Cancelled:
        raise
    except PortraitError as exc:
        entry.update(status="failed", outputs=0, **exc.to_dict())
    except Exception as exc:  # one customer's bug must not stop the studio's other rows
        log.exception("batch row %s failed unexpectedly", row.name)
        entry.update(status="failed", outputs=0, **internal_error(exc))
