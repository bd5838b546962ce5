"""The run job: the whole chain (photos → preprocess → identity → each template → ranked portraits)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from ..errors import ConfigError
from .configs import RunConfig
from .pipeline import PortraitPipeline
from .results import RunResult
from ..progress import CancelToken, ProgressCallback


def template_names(templates: Sequence[str | Path]) -> list[str]:
    """The templates to render: as given, or every template on the search path when none is."""
    from ..templates import list_templates

    names = [str(t) for t in templates] or [t.name for t in list_templates()]
    if not names:
        raise ConfigError("no templates found: pass --template NAME_OR_DIR or add one with `portrait templates add`")
    return names


def run(photos: Path | Sequence[Path], templates: Sequence[str | Path], out_dir: Path, config: RunConfig | None = None,
        *, others: Mapping[int, Path | Sequence[Path]] | None = None, progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None, pool=None) -> RunResult:
    """Portraits of the person in `photos` on each template, written with result.json under out_dir.

    `others`: another person's photos per face slot (multi-face templates). A template that fails is
    recorded in `failures` and the others go on. `pool`: a preprocess.workers.WorkerPool the caller holds."""
    config = config or RunConfig()
    names = template_names(templates)
    pipe = PortraitPipeline(config, pool=pool)
    return pipe.run(photos, names, Path(out_dir), others=others, progress=progress, cancel=cancel)
