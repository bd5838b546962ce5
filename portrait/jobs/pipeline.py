"""The whole chain behind `portrait run`: photos → preprocess → identity → per template
(fusion, paste, [two-pass diffusion inpaint], retouch, upscale) → ranking by likeness → result.json.

One template failing (bad image, no face, bad template.toml) is recorded and the others go on; a
cancelled run (its `cancel` set) stops at the next photo, template, variant or diffusion step, raises
portrait.errors.Cancelled and writes no result.json.

A PortraitPipeline keeps models between runs (a worker serves one user after another with one
instance); everything about one run (the person, their identity, the other people, progress, cancel)
lives in that run's _Run, and each run ends with the shared UNet's identity adapters taken off.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from ..engines import EngineChoice, choose_diffusion, choose_fusion, choose_identity, choose_retouch, choose_upscale
from ..errors import Cancelled, ConfigError, NotEnoughPhotosError, PortraitError, internal_error
from ..faces import Face, get_face_analysis
from ..imageio import save_image
from ..models.manifest import get_manifest
from ..post.rank import Candidate, best_of, measure_slots
from ..progress import ProgressCallback, check_cancel, report
from ..templates import Template
from .configs import RunConfig
from .results import RunResult, TemplateOutput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Engines:
    """The engines of a run: one EngineChoice per stage, and how the identity is painted under diffusion
    ("lora", "faceid" or "instantid"; None without diffusion: engines.choose_identity)."""

    choices: tuple[EngineChoice, ...]
    identity: Optional[str] = None

    def of(self, stage: str) -> EngineChoice:
        return next(e for e in self.choices if e.stage == stage)

    @property
    def diffusion(self) -> bool:
        return self.of("inpaint").engine == "diffusion"

    def __iter__(self):
        return iter(self.choices)


@dataclass(frozen=True)
class RunPlan:
    """What `check` found: the templates (loaded and checked; AutoPicks still to choose from) and the engines
    that will paint them."""

    templates: tuple
    engines: Engines


@dataclass
class _Run:
    """One run's state: the person, their identity, the other people, the engines, progress and cancel."""

    progress: Optional[ProgressCallback]
    engines: Engines
    cancel: object = None
    pre: object = None  # the user's preprocess.PreprocessedPhotos
    people: dict = field(default_factory=dict)  # slot -> preprocess.PreprocessedPhotos of another person
    identity: object = None  # the user's generate.template_inpaint.Sitter (diffusion), made on first use
    slot_identities: dict = field(default_factory=dict)

    def check(self) -> None:
        check_cancel(self.cancel, "run cancelled")


class PortraitPipeline:
    """The chain for one RunConfig; models are cached on it (and per process by the engines), never a run's
    state: one instance serves run after run, each run's person in its own _Run."""

    def __init__(self, config: RunConfig | None = None, progress: Optional[ProgressCallback] = None, *,
                 pool=None):
        self.config = config = config or RunConfig()
        self.progress = progress  # the default for runs that pass none
        self.pool = pool  # a preprocess.workers.WorkerPool the caller owns (None: one per preprocess call)
        self.manifest = get_manifest(config.models_dir)
        from ..models.device import onnx_device, resolve_device

        # One device for every stage of every run (issue 16: no stage is left on the CPU of a GPU machine).
        self.device = resolve_device(config.device)
        self.onnx_device = onnx_device(self.device)
        self.fa = get_face_analysis(config.face)
        if config.dtype is not None:
            from ..models.device import check_dtype_name

            check_dtype_name(config.dtype)
        # The engines this config chooses before templates are known; check() chooses again for its templates'
        # ControlNets and returns them in its RunPlan (nothing of a run is written here).
        self.engines = self._choose_engines(None)
        self._painter = None  # diffusion models and the recipe: loaded on first use, kept

    @property
    def identity_engine(self) -> Optional[str]:
        return self.engines.identity

    def _choose_engines(self, controls: Optional[Sequence[str]]) -> Engines:
        c, m = self.config, self.manifest
        inpaint = choose_diffusion(c.diffusion, m, c.base_model, c.identity, c.face.embedder, controls)
        if inpaint.engine == "diffusion" and c.inpaint_size:
            inpaint = EngineChoice(inpaint.stage, inpaint.engine, f"{inpaint.reason}, {c.inpaint_size} px working crops")
        if inpaint.engine == "diffusion":
            from ..models.loading import planned_vae

            vae = planned_vae(c.base_model or "sd15", m, self.device, c.dtype)
            if vae != "base":  # result.json says which VAE decodes (an fp16 SDXL base takes the fp16-fix one)
                inpaint = replace(inpaint, reason=f"{inpaint.reason}, VAE {vae}")
        chosen = [
            EngineChoice("faces", "+".join(self.fa.engines().values()), "face detector+landmarks+embedder"),
            choose_fusion(c.fusion, m, c.face.embedder),
            inpaint,
            choose_retouch(c.retouch, m),
            choose_upscale(c.upscale, m, c.upscale_factor),
        ]
        chosen = tuple(replace(e, device=self._stage_device(e)) for e in chosen)
        identity = None
        if inpaint.engine == "diffusion":
            identity = choose_identity(m, c.base_model or "sd15", c.identity, c.face.embedder)[0]
        return Engines(chosen, identity)

    def _stage_device(self, e: EngineChoice) -> str:
        """Where a chosen engine runs: the run's device for the model-backed ones (torch, or onnxruntime's
        provider for the ONNX ones), the CPU for the classic numpy / OpenCV ones, "" for a skipped stage."""
        if e.engine == "skipped":
            return ""
        if e.stage == "faces":
            return self.config.face.device
        if e.stage == "inpaint":
            return self.device if e.engine == "diffusion" else "cpu"
        if e.engine == "classic" or e.engine == "none":
            return "cpu"
        return self.onnx_device if e.engine == "onnx" else self.device

    def engine(self, stage: str) -> EngineChoice:
        return self.engines.of(stage)

    # -- the run ----------------------------------------------------------------------------------
    def check(self, templates: Sequence, others: Mapping[int, Path] | None = None) -> RunPlan:
        """Everything checkable before a photo is processed: each template (name, folder or image file)
        loads and has its faces, each slot in `others` exists in a template, the engines can run with
        these templates (ControlNets present; else auto falls back, "on" raises). Returns the RunPlan;
        raises a PortraitError naming the problem."""
        from ..preflight import check_diffusion_settings, check_photos_folder, check_slots
        from ..templates import resolve_templates
        from ..templates.choice import AutoPick, candidates, parse_auto

        picks, explicit = [], []
        for ref in templates:
            req = None if isinstance(ref, (AutoPick, Template, Path)) else parse_auto(ref)
            if isinstance(ref, AutoPick):
                picks.append(ref)
            elif req is not None:
                from ..templates import list_templates

                picks.append(AutoPick(req, tuple(candidates(list_templates(), req))))
            else:
                explicit.append(ref)
        tmpls = resolve_templates(explicit, self.fa) if explicit or not picks else []
        pool = tmpls + [t for p in picks for t in resolve_templates(p.candidates, self.fa)]  # all checked now
        check_slots(others, pool)
        for slot, folder in sorted((others or {}).items()):
            if not isinstance(folder, (list, tuple)):
                check_photos_folder(folder, f"photos folder for face slot {slot}")
        engines = self.engines
        if engines.diffusion:  # decided again for these templates (a batch row's differ from the last)
            from ..engines import _base_info
            from ..templates.painting import template_controls

            arch = _base_info(self.manifest, self.config.base_model or "sd15")[0]  # SDXL's recipe: canny only
            engines = self._choose_engines(list(dict.fromkeys(c for t in pool for c in template_controls(t, arch=arch))))
            if engines.diffusion:
                check_diffusion_settings(pool, self.fa, steps=self.config.steps, arch=arch)
        if others and engines.diffusion and engines.identity == "lora":
            raise ConfigError("other people in face slots need a face-embedding identity (FaceID / InstantID), "
                              "but --identity is the user's LoRA: leave out --identity, or --diffusion off")
        return RunPlan(tuple(tmpls + picks), engines)

    def run(self, photos: Path | Sequence[Path], templates: Sequence, out_dir: Path,
            others: Mapping[int, Path] | None = None, *, progress: Optional[ProgressCallback] = None,
            cancel=None) -> RunResult:
        """`photos`: the user, painted into every face slot of each template except those in `others`,
        which maps a slot to another person's photos (a couple on a two-face template). `templates`:
        names, template folders, image files or Templates, all checked (`check`) before any photo is read.
        `cancel` (anything with is_set()): Cancelled at the next photo, template, variant or diffusion
        step; no result.json."""
        plan = self.check(templates, others)
        run = _Run(progress if progress is not None else self.progress, plan.engines, cancel)
        try:
            return self._run(run, photos, list(plan.templates), Path(out_dir), others)
        finally:
            if self._painter is not None:
                self._painter.models.clear_identity()  # nothing of this person stays on the shared UNet

    def _run(self, run: _Run, photos, templates: Sequence, out_dir: Path, others) -> RunResult:
        out_dir.mkdir(parents=True, exist_ok=True)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        run.pre = pre = self._preprocess(run, photos, out_dir / "preprocess")
        run.people = {slot: self._preprocess(run, p, out_dir / f"preprocess-slot{slot}")
                      for slot, p in sorted((others or {}).items())}
        timings["preprocess"] = time.perf_counter() - t0
        references = self._references(pre)
        centroid = pre.centroid
        templates, auto = self._choose(pre, templates)
        outputs, failures = [], []
        for i, tmpl in enumerate(templates):
            run.check()
            report(run.progress, "templates", i, len(templates))
            try:
                outputs.append(self._one_template(run, tmpl, references, centroid, out_dir, timings))
            except Cancelled:
                raise
            except PortraitError as exc:
                failures.append({"template": tmpl.name, **exc.to_dict()})
            except Exception as exc:  # a bug must not cost the user the other templates: record it loudly
                log.exception("template %s failed unexpectedly", tmpl.name)
                failures.append({"template": tmpl.name, **internal_error(exc)})
        run.check()
        report(run.progress, "templates", len(templates), len(templates))
        outputs.sort(key=lambda o: o.distance)
        timings["total"] = time.perf_counter() - t0
        result = RunResult(outputs, failures, list(run.engines), timings,
                           {"accepted": pre.accepted_count, "selected": pre.selected, "reference": pre.reference,
                            "report": str(out_dir / "preprocess" / "report.json")},
                           self.fa.metric, self.fa.same_person_threshold, auto=auto)
        result.result_file = out_dir / "result.json"
        result.result_file.write_text(json.dumps(result.to_dict(), indent=2))
        return result

    def _choose(self, pre, templates: Sequence) -> tuple[list, dict]:
        """The checked templates with each AutoPick replaced by the templates it chooses for this user
        (never one named explicitly, nor one an earlier pick chose), and the record of why."""
        from ..post.skin_tone import skin_tone
        from ..templates.choice import AutoPick, choose, user_look

        picks = [t for t in templates if isinstance(t, AutoPick)]
        chosen = [t for t in templates if not isinstance(t, AutoPick)]
        if not picks:
            return chosen, {}
        tone = skin_tone(pre.reference_image, pre.reference_face)
        yaws = [p.face.yaw for p in pre.photos if p.file in pre.selected and p.face is not None]
        look = user_look(yaws, tone.ita, tone.monk)
        record = {"user": look.to_dict(), "picks": []}
        for pick in picks:
            choices = choose(look, pick.candidates, pick.request.n, exclude=[t.name for t in chosen])
            by_name = {t.name: t for t in pick.candidates}
            chosen += [by_name[c.template] for c in choices]
            record["picks"].append({"spec": pick.request.spec, "chosen": [c.to_dict() for c in choices]})
        return chosen, record

    def _preprocess(self, run: _Run, photos, out: Path):
        from preprocess import PreprocessConfig, run_preprocess

        c = self.config
        pre = run_preprocess(photos, out, PreprocessConfig(top_k=c.top_k, min_photos=c.min_photos,
                                                           resolution=c.resolution, face=c.face),
                             progress=run.progress, pool=self.pool, cancel=run.cancel)
        if pre.accepted_count < c.min_photos or pre.reference_face is None:
            raise NotEnoughPhotosError(
                f"{photos}: only {pre.accepted_count} usable photo(s), at least {c.min_photos} needed; "
                f"see {out / 'report.json'} for each photo's reason"
            )
        return pre
    def _references(self, pre) -> list[tuple[str, np.ndarray, Face]]:
        """The reference photo first, then the other selected photos, closest to the identity first."""
        by_file = {p.file: p for p in pre.photos}
        others = sorted((f for f in pre.selected if f != pre.reference and by_file[f].face is not None),
                        key=lambda f: self.fa.distance(pre.embeddings[f], pre.centroid))
        refs = [(pre.reference, pre.reference_image, pre.reference_face)]
        for f in others[: self.config.max_tries - 1]:
            refs.append((f, None, by_file[f]))  # decoded lazily: only if a retry needs it
        return refs

    def _reference(self, refs: list, i: int) -> tuple[str, np.ndarray, Face]:
        name, img, face = refs[i]
        if img is None:  # a PhotoResult: full resolution, upright as judged, where its face coordinates live
            img, face = face.image(), face.face
            refs[i] = (name, img, face)
        return refs[i]

    def _one_template(self, run: _Run, tmpl, references, centroid, out_dir: Path, timings: dict) -> TemplateOutput:
        c = self.config
        n = len(references)
        # The first variants differ only in their reference photo: one batched denoising call paints them
        # all (a one-face template under diffusion); retries for the likeness bar run one at a time.
        painted = self._diffuse_variants(run, tmpl, [self._reference(references, i) for i in range(min(c.variants, n))])

        def variant(i: int):
            ref = self._reference(references, i)
            return self._render(run, tmpl, *ref, painted=painted.get(i))

        ranked = best_of(
            variant,
            centroid, variants=min(c.variants, n), max_tries=min(c.max_tries, n), metric=self.fa.metric,
            threshold=self.fa.same_person_threshold, bar=c.likeness_bar,
        )
        best = ranked[0]
        for k, v in best.meta["timings"].items():
            timings[f"{tmpl.name}.{k}"] = v
        path = save_image(best.image, out_dir / f"{tmpl.name}.png")
        return TemplateOutput(tmpl.name, str(path), best.meta["reference"], best.distance, best.similarity,
                              best.passed_bar, len(ranked), best.meta["timings"], best.meta["others"],
                              best.meta.get("slots", {}))

    def _render(self, run: _Run, tmpl, ref_name: str, ref_img: np.ndarray, ref_face: Face,
                painted: tuple[np.ndarray, float] | None = None) -> Candidate:
        """One portrait of the user on `tmpl` from one reference photo, and its face embedding. `painted`:
        (image, seconds) of this variant's diffusion, already made in a batch (_diffuse_variants)."""
        run.check()  # between variants
        from ..post.fusion import fuse
        from ..post.retouch import retouch
        from ..post.upscale import upscale

        c, t = self.config, {}
        image = tmpl.image()
        slot_faces = tmpl.slot_faces(self.fa)
        slots = sorted(slot_faces)
        # Who goes where: another person's reference in their slots, this variant's reference elsewhere.
        people = {s: ((p.reference_image, p.reference_face) if (p := run.people.get(s)) else (ref_img, ref_face))
                  for s in slots}
        tic = time.perf_counter()
        if painted is not None:
            image, t["inpaint"] = painted
        elif run.engines.diffusion:
            # The two-pass recipe runs its own fusion #1 / #2 around the ControlNet inpaints.
            image = self._diffuse(run, tmpl, people)
            t["inpaint"] = time.perf_counter() - tic
        else:
            fusion = run.engines.of("fusion").engine
            for slot in slots:
                img, face = people[slot]
                image = fuse(image, slot_faces[slot], img, face, engine=fusion, manifest=self.manifest,
                             source_embedding=face.embedding, device=self.onnx_device, skin=c.skin,
                             fringe=c.fringe).image
            t["fusion"] = time.perf_counter() - tic
        retouch_engine = run.engines.of("retouch").engine
        if retouch_engine != "skipped":
            tic = time.perf_counter()
            for slot in slots:
                image = retouch(image, slot_faces[slot], engine=retouch_engine, strength=c.retouch_strength,
                                manifest=self.manifest, device=self.device)
            t["retouch"] = time.perf_counter() - tic
        scale, tmpl_width = 1.0, image.shape[1]
        up = run.engines.of("upscale").engine
        factor = c.upscale_factor if c.upscale_factor is not None else tmpl.upscale
        if up != "skipped" and factor > 1:
            tic = time.perf_counter()
            image = upscale(image, factor, engine=up, manifest=self.manifest, device=self.device,
                            progress=run.progress)
            scale = image.shape[1] / tmpl_width
            t["upscale"] = time.perf_counter() - tic
        tic = time.perf_counter()
        # Measured on what a viewer sees: the face in each painted slot of this output (post.rank.measure_slots).
        targets = {s: (run.people[s].centroid if s in run.people else run.pre.centroid) for s in slots}
        bar = c.likeness_bar if c.likeness_bar is not None else self.fa.same_person_threshold
        seen = measure_slots(self.fa.analyze(image), {s: slot_faces[s].scaled(scale) for s in slots}, targets,
                             self.fa.distance, bar)
        mine = [s for s in slots if s not in run.people] or slots
        others = {s: seen[s].distance for s in slots if s in run.people}
        t["rank"] = time.perf_counter() - tic
        return Candidate(seen[mine[0]].embedding, image=image, eligible=all(seen[s].main_face for s in mine),
                         meta={"reference": ref_name, "timings": {k: round(v, 3) for k, v in t.items()},
                               "others": others, "slots": {s: v.to_dict() for s, v in seen.items()}})

    def _diffuse_variants(self, run: _Run, tmpl, refs: list) -> dict[int, tuple[np.ndarray, float]]:
        """Variant index -> (painted image, seconds each) for the first variants of a one-face template under
        diffusion, in one batched call (the Painter batches jobs whose settings match, each job with its own
        reference photo); {} where they paint one at a time (several slots, other people, one variant)."""
        if not run.engines.diffusion or len(refs) < 2 or run.people or len(tmpl.slot_faces(self.fa)) != 1:
            return {}
        run.check()
        tic = time.perf_counter()
        painted = self._paint(run, tmpl, [(img, face) for _, img, face in refs])
        each = (time.perf_counter() - tic) / len(refs)
        return {i: (r.image, each) for i, r in enumerate(painted)}

    def _diffuse(self, run: _Run, tmpl, people: dict[int, tuple[np.ndarray, Face]]) -> np.ndarray:
        """Paint each slot in turn (each on the previous result): the user's slots from this variant's
        reference photo, another person's with their own identity."""
        mine = next((v for s, v in sorted(people.items()) if s not in run.people), next(iter(people.values())))
        others = {s: (self._slot_identity(run, s), img, face) for s, (img, face) in people.items() if s in run.people}
        return self._paint(run, tmpl, [mine], others)[0].image

    def _paint(self, run: _Run, tmpl, references: list, people: dict | None = None) -> list:
        """`tmpl` painted from each reference photo by the shared Painter (templates.painting: the one
        orchestration `run` and `generate` share)."""
        painter, identity = self._diffusion_painter(run)
        return painter.paint([tmpl], identity, references, people=people or None, face_analysis=self.fa,
                             progress=run.progress, cancel=run.cancel, steps=self.config.steps,
                             seed=self.config.seed)[0]

    def _face_identity(self, run: _Run, pre):
        from ..generate.template_inpaint import Sitter
        from ..identity.face_embedding import FaceIdentity

        engine = "instantid" if run.engines.identity == "instantid" else "faceid"
        return Sitter(face=FaceIdentity.from_vectors([pre.embeddings[f] for f in pre.selected],
                                                       list(pre.selected), self.config.face.embedder,
                                                       self.fa.metric), engine=engine)

    def _slot_identity(self, run: _Run, slot: int):
        """Another person's identity: their face embedding (FaceID / InstantID; only the user has a LoRA)."""
        if slot not in run.slot_identities:
            if run.engines.identity == "lora":
                raise ConfigError(f"face slot {slot} holds another person, but --identity is the user's LoRA: "
                                  "painting other people needs a face-embedding engine (FaceID / InstantID): "
                                  "leave out --identity")
            run.slot_identities[slot] = self._face_identity(run, run.people[slot])
        return run.slot_identities[slot]

    def _diffusion_painter(self, run: _Run):
        """The Painter (base + FaceID adapter or InstantID) loaded once per pipeline, ControlNets as templates
        need them; the user's identity once per run, painted by the run's identity engine."""
        from ..generate.template_inpaint import Sitter
        from ..templates.painting import Painter

        c = self.config
        if self._painter is None:
            self._painter = Painter.load(c.base_model or "sd15", run.engines.identity, self.manifest,
                                         device=self.device, dtype=c.dtype, sampler=c.scheduler,
                                         crop_size=c.inpaint_size, fusion_engine=run.engines.of("fusion").engine)
        if run.identity is None:
            run.identity = Sitter.from_path(c.identity) if c.identity else self._face_identity(run, run.pre)
        return self._painter, run.identity
