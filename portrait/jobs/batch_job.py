"""The batch job: a studio's rows (one person's photos and templates each) run one after another; a
failing row never stops the rest. out_dir/<row name>/ per row, out_dir/batch.json for all."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping, Sequence

from ..batch import BatchRow, read_manifest, row_dir, row_status, safe_name, unique_names
from ..errors import Cancelled, ConfigError, PortraitError, internal_error
from .configs import RunConfig
from .pipeline import PortraitPipeline
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .configs import CreateConfig
from .create_job import RESULT_NAME as CREATE_RESULT
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
            given.append((r.given_name, r.photos, r.templates, r.styles))
            continue
        if not isinstance(r, Mapping) or not r.get("photos"):
            raise ConfigError(f"batch row {i}: needs 'photos' (a folder of the person's photos)")

        def names_of(key: str) -> tuple[str, ...]:
            v = r.get(key) or ()
            return tuple(x.strip() for x in (v.split(";") if isinstance(v, str) else v) if str(x).strip())

        given.append((str(r.get("name") or "").strip(), Path(r["photos"]).expanduser().absolute(),
                      names_of("templates"), names_of("styles")))
    names = unique_names(safe_name(g[0], i) for i, g in enumerate(given, 1))
    return [BatchRow(i, name, *g) for i, (g, name) in enumerate(zip(given, names), 1)]


def batch(rows: Path | str | Sequence[BatchRow | Mapping], out_dir: Path, config: RunConfig | None = None, *,
          progress: ProgressCallback | None = None, cancel: CancelToken | None = None, pool=None,
          resume: bool = False, create: CreateConfig | None = None) -> BatchResult:
    """Every row checked first (photos folder, templates or styles, models: a row that cannot start is
    `failed`), then run. A row with `styles` makes new scenes from its photos (jobs.create with `create`'s
    settings, the photos embedded first); the others run the templates.
    Row status: done (every template or style gave a picture), partial (some did), failed (none did).
    `resume`: a row whose folder already holds a complete result.json (a portrait for each of its
    templates, every file present) is not run again; its entry comes from that file (`resumed: true`)."""
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
            if row.styles:
                planned.append((row, entry, folder, _check_create_row(row, create or CreateConfig())))
            else:
                planned.append((row, entry, folder, pipe.check(list(row.templates) or every).templates))
        except PortraitError as exc:
            entry.update(status="failed", outputs=0, **exc.to_dict())
        summary.append(entry)
    for i, (row, entry, folder, templates) in enumerate(planned):
        check_cancel(cancel, "batch cancelled")
        report(progress, "batch", i, len(planned))
        done = completed_row(folder, templates, CREATE_RESULT if row.styles else "result.json") if resume else None
        if done is not None:
            entry.update(done)
            continue
        if row.styles:
            _guarded(row, entry, lambda: _create_row(row, entry, folder, create or CreateConfig(), progress, cancel))
        else:
            _run_row(pipe, row, entry, folder, templates, progress, cancel)
    report(progress, "batch", len(planned), len(planned))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2))
    return BatchResult(summary, out_dir / SUMMARY_NAME)


def completed_row(folder: Path, templates: Sequence, result_name: str = "result.json") -> dict | None:
    """The summary entry of a row already run to completion (folder/result.json, or create.json for a
    styles row, naming an existing picture for every one of `templates` (or styles)), or None when it must
    run (missing, partial, unreadable)."""
    path = folder / result_name
    try:
        result = json.loads(path.read_text())
        outputs = [o for o in result.get("outputs") or [] if isinstance(o, dict)]
    except (OSError, ValueError, AttributeError):
        return None
    made = set()
    for o in outputs:
        file = Path(str(o.get("file") or ""))
        if (file if file.is_absolute() else folder / file).is_file():
            made.add(str(o.get("template")))
    wanted = {getattr(t, "name", str(t)) for t in templates}
    if not outputs or not wanted <= made:
        return None
    return {"status": "done", "result": str(path), "outputs": len(outputs), "failures": 0, "best": outputs[0],
            "resumed": True}


def _check_create_row(row: BatchRow, config: CreateConfig) -> list[str]:
    """A styles row's check before any row runs: no templates beside styles, every style found, every
    model `create` needs present (one error naming all that are missing)."""
    from ..models.manifest import get_manifest
    from ..styles import load_style
    from .create_job import needed_models, require_all

    if row.templates:
        raise ConfigError(f"batch row {row.index}: give templates or styles, not both")
    packs = [load_style(s) for s in row.styles]
    manifest = get_manifest(config.models_dir)
    require_all(manifest, needed_models(manifest, config.base_model or "sd15", True, config.engine, packs))
    return [p.name for p in packs]


def _create_row(row: BatchRow, entry: dict, folder: Path, config: CreateConfig, progress, cancel) -> None:
    from .create_job import create

    result = create(row.photos, list(row.styles), folder, config, progress=progress, cancel=cancel)
    outputs = result.to_dict()["outputs"]
    entry.update(status=row_status(len(outputs), 0), result=str(result.result_file), outputs=len(outputs),
                 failures=0, best=outputs[0] if outputs else None)


def _run_row(pipe: PortraitPipeline, row: BatchRow, entry: dict, folder: Path, templates, progress, cancel) -> None:
    def run() -> None:
        result = pipe.run(row.photos, templates, folder, progress=progress, cancel=cancel)
        entry.update(status=row_status(len(result.outputs), len(result.failures)),
                     result=str(result.result_file), outputs=len(result.outputs),
                     failures=len(result.failures),
                     best=result.outputs[0].to_dict() if result.outputs else None)
        if result.failures:
            entry["failed_templates"] = [f["template"] for f in result.failures]

    _guarded(row, entry, run)


def _guarded(row: BatchRow, entry: dict, work) -> None:
    """Run one row's work; its failure is the row's (`failed` with the error), never the batch's."""
    try:
        work()
    except Cancelled:
        raise
    except PortraitError as exc:
        entry.update(status="failed", outputs=0, **exc.to_dict())
    except Exception as exc:  # one customer's bug must not stop the studio's other rows
        log.exception("batch row %s failed unexpectedly", row.name)
        entry.update(status="failed", outputs=0, **internal_error(exc))
