"""The progress stages every job reports, and one overall 0..1 fraction for a web progress bar.

    progress = OverallProgress("run", on_change=lambda stage, fraction: ...)
    portrait.jobs.run(photos, templates, out, progress=progress)
    progress.fraction, progress.stage

STAGES maps each stage name a job reports through `progress(stage, done, total)` to its weight: the
share of its job's time it takes on a typical CPU run (relative within the job). JOB_STAGES lists,
per job kind, the stages that move the bar in order; any other stage (weight 0: the steps inside a
template, a training validation) refines the stage running around it. The fraction never goes
backwards: a stage repeated (a second variant, the next slot) holds the bar until it passes its mark.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

STAGES: dict[str, float] = {
    # preprocess: photos in, training set out
    "intake": 1.0,  # decode each photo (EXIF, limits)
    "analyse": 3.0,  # faces, identity, quality scores per photo
    "select": 0.2,  # verdicts, top-k, reference
    "crops": 1.0,  # training crops written
    # embed
    "embed": 2.0,  # face embedding per training photo
    # train
    "cache": 1.0,  # VAE latents and caption embeddings, once
    "train": 20.0,  # LoRA training steps
    # generate / run
    "load models": 2.0,  # diffusion base + ControlNets (cached after the first job)
    "templates": 20.0,  # one per template (run: fusion/inpaint, retouch, upscale, rank of each variant)
    "outputs": 4.0,  # generate: each template painted
    "batch": 1.0,  # one per manifest row
    # create
    "styles": 20.0,  # one per style: its candidates rendered, detailed, finished and ranked
    # inside a stage above (weight 0: they refine it)
    "fusion": 0.0,
    "inpaint 1": 0.0,  # diffusion steps of pass 1 (the face)
    "pass1": 0.0,
    "inpaint 2": 0.0,  # diffusion steps of pass 2 (the edge ring)
    "pass2": 0.0,
    "upscale": 0.0,
    "validate": 0.0,  # a training checkpoint's validation renders
    "candidates": 0.0,  # create: candidates rendered of a style
    "render": 0.0,  # create: text-to-image steps
    "detail": 0.0,  # create: face-detail pass steps
}

# The stages that move each job's bar, in order.
JOB_STAGES: dict[str, tuple[str, ...]] = {
    "preprocess": ("intake", "analyse", "select", "crops"),
    "embed": ("intake", "analyse", "select", "embed"),
    "train": ("cache", "train"),
    "generate": ("load models", "outputs"),
    "run": ("intake", "analyse", "select", "crops", "templates"),
    "batch": ("batch",),
    "create": ("intake", "analyse", "select", "embed", "load models", "styles"),  # the first four: from photos
}


class OverallProgress:
    """A `progress(stage, done, total)` callback that keeps one overall fraction (0..1, never decreasing)
    and the current stage label for a job of `kind`; `on_change(stage, fraction)` sees every update."""

    def __init__(self, kind: str, on_change: Optional[Callable[[str, float], None]] = None):
        if kind not in JOB_STAGES:
            raise ValueError(f"unknown job kind {kind!r}; choose from {', '.join(JOB_STAGES)}")
        order = JOB_STAGES[kind]
        total = sum(STAGES[s] for s in order)
        self.weights = {s: STAGES[s] / total for s in order}
        self.starts, acc = {}, 0.0
        for s in order:
            self.starts[s] = acc
            acc += self.weights[s]
        self.on_change = on_change
        self.fraction = 0.0
        self.stage: str | None = None
        self._outer: tuple[str, int, int] | None = None  # the last bar-moving stage: (name, done, total)
        self._lock = threading.Lock()

    def __call__(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            value = self._position(stage, done, max(int(total), 1))
            if value is not None and value > self.fraction:
                self.fraction = min(1.0, value)
            self.stage = stage
            fraction = self.fraction
        if self.on_change is not None:
            self.on_change(stage, fraction)

    def _position(self, stage: str, done: int, total: int) -> float | None:
        done = min(max(int(done), 0), total)
        if stage in self.weights:
            self._outer = (stage, done, total)
            return self.starts[stage] + self.weights[stage] * done / total
        if self._outer is None:
            return None
        name, odone, ototal = self._outer
        if odone >= ototal:
            return None
        # An inner stage: progress within the outer stage's current item (done .. done + 1).
        item = (odone + done / total) / ototal
        return self.starts[name] + self.weights[name] * min(item, (odone + 0.999) / ototal)
