"""Job kinds: the public ones map one-to-one onto `portrait.jobs`; internal ones (names starting
with `_`) exist for the queue's own tests and bench and are refused by the API.

Options go through the kind's config class `from_dict` (portrait.jobs), which names any unknown key
or bad value; this runs at submit time, so a bad request is a 400 before anything is queued.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from portrait import jobs
from portrait.errors import Cancelled, ConfigError, PortraitError


@dataclass(frozen=True)
class JobKind:
    """What one public job kind is; the API's schemas, the service's checks, the runner and the worker all
    read this record (docs/design.md, "The job-kind table")."""

    name: str
    config: type  # its config class in portrait.jobs (options go through its from_dict)
    run: Callable  # the portrait.jobs function: run(source, [templates,] [styles,] out_dir, config, progress=, cancel=)
    source: str  # what it works on: "photos" (the identity's accepted photos), "trainset" (a succeeded
    #             preprocess/run job's training set), "identity" (a succeeded train/embed job's file) or
    #             "identity-or-photos" (that file when there is one, else the photos, embedded by the job)
    templates: bool  # takes template names (at least one); the others refuse any
    pool: bool  # analyses photos in the worker's analysis processes (face models kept between jobs)
    produces: frozenset  # what a succeeded job of this kind leaves for later ones: "trainset", "identity"
    styles: bool = False  # takes style pack names (at least one), after the templates; the others refuse any


KINDS: dict[str, JobKind] = {k.name: k for k in (
    JobKind("preprocess", jobs.PreprocessConfig, jobs.preprocess, "photos", False, True, frozenset({"trainset"})),
    JobKind("train", jobs.TrainConfig, jobs.train, "trainset", False, False, frozenset({"identity"})),
    JobKind("embed", jobs.EmbedConfig, jobs.embed, "photos", False, True, frozenset({"identity"})),
    JobKind("generate", jobs.GenerateConfig, jobs.generate, "identity", True, False, frozenset()),
    JobKind("run", jobs.RunConfig, jobs.run, "photos", True, True, frozenset({"trainset"})),
    JobKind("create", jobs.CreateConfig, jobs.create, "identity-or-photos", False, False, frozenset(), styles=True),
)}
PUBLIC_KINDS = tuple(KINDS)
INTERNAL_KINDS = ("_empty", "_sleep")
# The kinds whose succeeded jobs provide a source (a train job needs one of theirs first).
PROVIDERS = {s: tuple(k.name for k in KINDS.values() if s in k.produces) for s in ("trainset", "identity")}


def config_for(kind: str, options: Mapping[str, Any] | None):
    """The job's config from the request's options (ConfigError naming a bad key or value)."""
    if kind in INTERNAL_KINDS:
        return _internal_options(kind, options or {})
    return KINDS[kind].config.from_dict(dict(options or {}))


def _internal_options(kind: str, options: Mapping[str, Any]) -> dict:
    allowed = {"_empty": set(), "_sleep": {"seconds", "steps", "fail"}}[kind]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"unknown option(s) for {kind}: {', '.join(unknown)}")
    out = dict(options)
    if kind == "_sleep":
        try:
            out["seconds"] = float(out.get("seconds", 1.0))
            out["steps"] = int(out.get("steps", 10))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad option for {kind}: {exc}") from exc
        if not (0 <= out["seconds"] <= 3600 and 1 <= out["steps"] <= 10_000):
            raise ConfigError("_sleep: seconds must be in 0..3600 and steps in 1..10000")
    return out


class InternalFailure(PortraitError):
    code = "internal_test_failure"


def run_internal(kind: str, options: dict, out_dir, *, progress=None, cancel=None) -> dict:
    """`_empty` does nothing; `_sleep` takes `seconds` in `steps` steps, checking `cancel` between
    them, and appends a line to out_dir/runs.log when it starts, at each step and when it ends (so
    tests can count executions)."""
    from pathlib import Path

    if kind == "_empty":
        return {"kind": kind}
    log = Path(out_dir) / "runs.log"
    with open(log, "a") as fh:
        fh.write("start\n")
    steps, seconds = options["steps"], options["seconds"]
    for i in range(steps):
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        if progress is not None:
            progress("sleep", i, steps)
        log.parent.mkdir(parents=True, exist_ok=True)  # a job writes as it goes (real ones: crops, checkpoints)
        with open(log, "a") as fh:
            fh.write("step\n")
        time.sleep(seconds / steps)
    if progress is not None:
        progress("sleep", steps, steps)
    if options.get("fail"):
        raise InternalFailure(str(options["fail"]))
    with open(log, "a") as fh:
        fh.write("end\n")
    return {"kind": kind, "steps": steps}
