"""The whole chain behind `portrait run`: photos → preprocess → identity → per template
(fusion, paste, [two-pass diffusion inpaint], retouch, upscale) → ranking by likeness → result.json.

One template failing (bad image, no face, bad template.toml) is recorded and the others go on.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from .engines import EngineChoice, choose_diffusion, choose_fusion, choose_identity, choose_retouch, choose_upscale
from .errors import ConfigError, NotEnoughPhotosError, PortraitError, internal_error
from .faces import Face, FaceConfig, get_face_analysis
from .imageio import save_image
from .models.manifest import get_manifest
from .post.rank import Candidate, best_of, output_face
from .progress import ProgressCallback, report

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    top_k: int = 12
    min_photos: int = 4
    resolution: int = 512
    face: FaceConfig = field(default_factory=FaceConfig)
    fusion: str = "auto"
    retouch: str = "auto"
    retouch_strength: float = 0.35
    upscale: str = "auto"
    upscale_factor: Optional[float] = None  # None: the template's output.upscale
    diffusion: str = "auto"
    base_model: Optional[str] = None
    identity: Optional[str] = None  # identity LoRA (.safetensors) from `portrait train`
    variants: int = 2  # reference photos rendered per template; the most alike output is kept
    max_tries: int = 4  # while no output reaches the likeness bar, try more reference photos, up to this
    likeness_bar: Optional[float] = None  # distance an output must reach; None = the same-person threshold
    steps: Optional[int] = None
    inpaint_size: Optional[int] = None  # working crop side for diffusion (default: 512 SD 1.5, 1024 SDXL)
    seed: Optional[int] = None
    device: Optional[str] = None
    models_dir: Optional[str] = None


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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["others"] = {str(k): (None if not np.isfinite(v) else round(v, 4)) for k, v in self.others.items()}
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

    def to_dict(self) -> dict:
        return {
            "outputs": [o.to_dict() for o in self.outputs],
            "failures": self.failures,
            "engines": {e.stage: e.to_dict() for e in self.engines},
            "likeness": {"metric": self.metric, "same_person_threshold": self.threshold,
                         "note": "distance: lower is more alike; similarity = 1 - distance / (2 x threshold)"},
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "preprocess": self.preprocess,
        }


class PortraitPipeline:
    """Stateless per run; models are cached per process by the engines themselves."""

    def __init__(self, config: RunConfig = RunConfig(), progress: Optional[ProgressCallback] = None):
        self.config = config
        self.progress = progress
        self.manifest = get_manifest(config.models_dir)
        self.fa = get_face_analysis(config.face)
        self.engines = self._choose_engines()
        # How the identity is painted when diffusion runs: "lora", "faceid" or "instantid" (see choose_identity).
        self.identity_engine: Optional[str] = None
        if self.engine("inpaint").engine == "diffusion":
            self.identity_engine = choose_identity(self.manifest, config.base_model or "sd15", config.identity,
                                                   config.face.embedder)[0]
        self._pre = None  # the current run's PreprocessResult
        self._models = self._identity = self._inpaint = None  # diffusion: loaded on first use
        self._people: dict = {}  # slot -> PreprocessResult of another person (this run)
        self._slot_identities: dict = {}

    def _choose_engines(self) -> list[EngineChoice]:
        c, m = self.config, self.manifest
        inpaint = choose_diffusion(c.diffusion, m, c.base_model, c.identity, c.face.embedder)
        if inpaint.engine == "diffusion" and c.inpaint_size:
            inpaint = EngineChoice(inpaint.stage, inpaint.engine, f"{inpaint.reason}, {c.inpaint_size} px working crops")
        return [
            EngineChoice("faces", "+".join(self.fa.engines().values()), "face detector+landmarks+embedder"),
            choose_fusion(c.fusion, m, c.face.embedder),
            inpaint,
            choose_retouch(c.retouch, m),
            choose_upscale(c.upscale, m, c.upscale_factor),
        ]

    def engine(self, stage: str) -> EngineChoice:
        return next(e for e in self.engines if e.stage == stage)

    # -- the run ----------------------------------------------------------------------------------
    def run(self, photos: Path | Sequence[Path], templates: Sequence[str], out_dir: Path,
            others: Mapping[int, Path] | None = None) -> RunResult:
        """`photos`: the user, painted into every face slot of each template except those in `others`,
        which maps a slot to another person's photos (a couple on a two-face template)."""
        if others and self.engine("inpaint").engine == "diffusion" and self.identity_engine == "lora":
            raise ConfigError("other people in face slots need a face-embedding identity (FaceID / InstantID), "
                              "but --identity is the user's LoRA: leave out --identity, or --diffusion off")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        pre = self._preprocess(photos, out_dir / "preprocess")
        self._people = {slot: self._preprocess(p, out_dir / f"preprocess-slot{slot}")
                        for slot, p in sorted((others or {}).items())}
        timings["preprocess"] = time.perf_counter() - t0
        self._pre, self._identity = pre, None  # a new person: never reuse the last run's identity
        self._slot_identities = {}
        references = self._references(pre)
        centroid = pre.centroid
        outputs, failures = [], []
        for i, name in enumerate(templates):
            report(self.progress, "templates", i, len(templates))
            try:
                outputs.append(self._one_template(name, references, centroid, out_dir, timings))
            except PortraitError as exc:
                failures.append({"template": name, **exc.to_dict()})
            except Exception as exc:  # a bug must not cost the user the other templates: record it loudly
                log.exception("template %s failed unexpectedly", name)
                failures.append({"template": name, **internal_error(exc)})
        report(self.progress, "templates", len(templates), len(templates))
        outputs.sort(key=lambda o: o.distance)
        timings["total"] = time.perf_counter() - t0
        result = RunResult(outputs, failures, self.engines, timings,
                           {"accepted": pre.accepted_count, "selected": pre.selected, "reference": pre.reference,
                            "report": str(out_dir / "preprocess" / "report.json")},
                           self.fa.metric, self.fa.same_person_threshold)
        result.result_file = out_dir / "result.json"
        result.result_file.write_text(json.dumps(result.to_dict(), indent=2))
        return result

    def _preprocess(self, photos, out: Path):
        from preprocess import PreprocessConfig, run_preprocess

        c = self.config
        pre = run_preprocess(photos, out, PreprocessConfig(top_k=c.top_k, min_photos=c.min_photos,
                                                           resolution=c.resolution, face=c.face),
                             progress=self.progress)
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
        if img is None:  # a PhotoResult: decode at full resolution, where its face coordinates live
            from .imageio import load_rgb

            img, face = load_rgb(face.path), face.face
            refs[i] = (name, img, face)
        return refs[i]

    def _one_template(self, name: str, references, centroid, out_dir: Path, timings: dict) -> TemplateOutput:
        from .templates import load_template

        c = self.config
        tmpl = load_template(name)
        n = len(references)
        ranked = best_of(
            lambda i: self._render(tmpl, *self._reference(references, i)),
            centroid, variants=min(c.variants, n), max_tries=min(c.max_tries, n), metric=self.fa.metric,
            threshold=self.fa.same_person_threshold, bar=c.likeness_bar,
        )
        best = ranked[0]
        for k, v in best.meta["timings"].items():
            timings[f"{tmpl.name}.{k}"] = v
        path = save_image(best.image, out_dir / f"{tmpl.name}.png")
        return TemplateOutput(tmpl.name, str(path), best.meta["reference"], best.distance, best.similarity,
                              best.passed_bar, len(ranked), best.meta["timings"], best.meta["others"])

    def _render(self, tmpl, ref_name: str, ref_img: np.ndarray, ref_face: Face) -> Candidate:
        """One portrait of the user on `tmpl` from one reference photo, and its face embedding."""
        from .post.fusion import fuse
        from .post.retouch import retouch
        from .post.upscale import upscale

        c, t = self.config, {}
        image = tmpl.image()
        slot_faces = tmpl.slot_faces(self.fa)
        slots = sorted(slot_faces)
        # Who goes where: another person's reference in their slots, this variant's reference elsewhere.
        people = {s: ((p.reference_image, p.reference_face) if (p := self._people.get(s)) else (ref_img, ref_face))
                  for s in slots}
        tic = time.perf_counter()
        if self.engine("inpaint").engine == "diffusion":
            # The two-pass recipe runs its own fusion #1 / #2 around the ControlNet inpaints.
            image = self._diffuse(tmpl, people)
            t["inpaint"] = time.perf_counter() - tic
        else:
            fusion = self.engine("fusion").engine
            for slot in slots:
                img, face = people[slot]
                image = fuse(image, slot_faces[slot], img, face, engine=fusion, manifest=self.manifest,
                             source_embedding=face.embedding, device=c.face.device).image
            t["fusion"] = time.perf_counter() - tic
        retouch_engine = self.engine("retouch").engine
        if retouch_engine != "skipped":
            tic = time.perf_counter()
            for slot in slots:
                image = retouch(image, slot_faces[slot], engine=retouch_engine, strength=c.retouch_strength,
                                manifest=self.manifest, device=c.device or "cpu")
            t["retouch"] = time.perf_counter() - tic
        scale, tmpl_width = 1.0, image.shape[1]
        up = self.engine("upscale").engine
        factor = c.upscale_factor if c.upscale_factor is not None else tmpl.upscale
        if up != "skipped" and factor > 1:
            tic = time.perf_counter()
            image = upscale(image, factor, engine=up, manifest=self.manifest, device=c.device or "cpu",
                            progress=self.progress)
            scale = image.shape[1] / tmpl_width
            t["upscale"] = time.perf_counter() - tic
        tic = time.perf_counter()
        found = self.fa.analyze(image)
        mine = [s for s in slots if s not in self._people] or slots
        judged = output_face(found, near=slot_faces[mine[0]].scaled(scale))
        others = {}
        for s in slots:
            if s in self._people:  # each other person's likeness in their own slot
                face = output_face(found, near=slot_faces[s].scaled(scale))
                others[s] = (float("inf") if face is None else
                             self.fa.distance(face.embedding, self._people[s].centroid))
        t["rank"] = time.perf_counter() - tic
        return Candidate(None if judged is None else judged.embedding, image=image,
                         meta={"reference": ref_name, "timings": {k: round(v, 3) for k, v in t.items()},
                               "others": others})

    def _diffuse(self, tmpl, people: dict[int, tuple[np.ndarray, Face]]) -> np.ndarray:
        """Paint each slot in turn (each on the previous result) with that slot's person's identity."""
        from .generate.template_inpaint import TemplateInpaint
        from .generate.template_jobs import generate_on_template, template_controls

        models, identity = self._diffusion_models()
        models.ensure_controlnets(template_controls(tmpl, arch=models.arch))  # this template's ControlNets, for the base's architecture
        if self._inpaint is None:
            self._inpaint = TemplateInpaint(models, fusion_engine=self.engine("fusion").engine,
                                            crop_size=self.config.inpaint_size)
        image = None
        for slot, (ref_img, ref_face) in sorted(people.items()):
            who = self._slot_identity(slot) if slot in self._people else identity
            image = generate_on_template(models, tmpl, who, ref_img, ref_face, inpaint=self._inpaint, slot=slot,
                                         image=image, progress=self.progress, face_analysis=self.fa,
                                         steps=self.config.steps, seed=self.config.seed).image
        return image

    def _face_identity(self, pre):
        from .generate.template_inpaint import Identity
        from .identity.face_embedding import FaceIdentity

        engine = "instantid" if self.identity_engine == "instantid" else "faceid"
        return Identity(face=FaceIdentity.from_vectors([pre.embeddings[f] for f in pre.selected],
                                                       list(pre.selected), self.config.face.embedder,
                                                       self.fa.metric), engine=engine)

    def _slot_identity(self, slot: int):
        """Another person's identity: their face embedding (FaceID / InstantID; only the user has a LoRA)."""
        if slot not in self._slot_identities:
            if self.identity_engine == "lora":
                raise ConfigError(f"face slot {slot} holds another person, but --identity is the user's LoRA: "
                                  "painting other people needs a face-embedding engine (FaceID / InstantID): "
                                  "leave out --identity")
            self._slot_identities[slot] = self._face_identity(self._people[slot])
        return self._slot_identities[slot]

    def _diffusion_models(self):
        """Base (+ FaceID adapter or InstantID) loaded once per pipeline, ControlNets as templates need them;
        the identity once per run, painted by self.identity_engine."""
        from .generate.pipelines import InpaintModels
        from .generate.template_inpaint import Identity

        c = self.config
        engine = self.identity_engine
        if self._models is None:
            faceid = self.manifest.require("ip-adapter-faceid") if engine == "faceid" else None
            self._models = InpaintModels.load(c.base_model or "sd15", (), manifest=self.manifest, device=c.device,
                                              faceid_adapter=faceid, instantid=engine == "instantid")
        if self._identity is None:
            self._identity = Identity.from_path(c.identity) if c.identity else self._face_identity(self._pre)
        return self._models, self._identity
