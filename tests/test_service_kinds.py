"""Every public job kind through the service and a worker, on the tiny models: the kinds table says what
each works on (photos, a training set, an identity file), what it needs first and what it leaves."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers_photos import small_photo_set
from server.db.models import Job
from server.errors import BadRequest
from server.service import Service
from server.settings import Settings
from server.worker import Worker

TRAIN = {"steps": 2, "rank": 4, "alpha": 4.0, "resolution": 64, "validate": False}


def _run_one(svc: Service, tenant: str, job_id: str) -> dict:
    """One job through an in-process worker; its API dict with the job layer's result (kept on the row)."""
    assert Worker(svc.settings, service=svc).run_forever(max_jobs=1) == 1
    job = svc.get_job(tenant, job_id)
    assert job["state"] == "succeeded", job["error"]
    with svc.db.session() as s:
        return {**job, "result": dict(s.get(Job, job_id).result or {})}


@pytest.mark.slow
def test_preprocess_train_generate_and_embed_through_the_worker(tmp_path, tmp_path_factory, tiny_models_dir,
                                                                monkeypatch):
    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(tiny_models_dir))  # the worker's models, as a server sets them
    svc = Service(Settings.load({"data_dir": tmp_path / "data"}, env={}))
    t, _ = svc.create_tenant("studio")
    tid = t["id"]
    ident = svc.create_identity(tid, "astronaut")["id"]
    for p in sorted(small_photo_set(tmp_path_factory).iterdir()):
        svc.add_photo(tid, ident, p.name, p.read_bytes())

    # What a kind needs first is refused before anything is queued, naming the job to run.
    with pytest.raises(BadRequest) as no_trainset:
        svc.submit_job(tid, "train", ident, options=TRAIN)
    assert no_trainset.value.code == "no_trainset" and "preprocess or run" in no_trainset.value.message
    with pytest.raises(BadRequest) as no_identity:
        svc.submit_job(tid, "generate", ident, ["studio-grey"], {"steps": 2})
    assert no_identity.value.code == "no_identity_model" and "train or embed" in no_identity.value.message
    with pytest.raises(BadRequest) as no_templates:
        svc.submit_job(tid, "preprocess", ident, ["studio-grey"])
    assert no_templates.value.code == "bad_templates"

    pre = _run_one(svc, tid, svc.submit_job(tid, "preprocess", ident, options={"min_photos": 3})["id"])
    assert pre["result"]["ok"] is True
    # create before any train/embed job: train-free, the job embeds the photos for the FaceID adapter itself.
    scene = _run_one(svc, tid, svc.submit_job(tid, "create", ident, styles=["watercolour"],
                                              options={"count": 1, "size": 64, "steps": 2})["id"])
    assert scene["result"]["identity_kind"] == "faceid" and scene["result"]["engine"] == "faceid"
    assert Path(scene["result"]["identity"]).name == "identity_embedding.safetensors" and len(scene["results"]) == 1
    train = _run_one(svc, tid, svc.submit_job(tid, "train", ident, options=TRAIN)["id"])
    assert Path(train["result"]["lora"]).name == "identity.safetensors" and train["result"]["steps"] == 2
    gen = _run_one(svc, tid, svc.submit_job(tid, "generate", ident, ["studio-grey"], {"steps": 4, "seed": 1})["id"])
    # create: the same identity in a style pack, no template; styles are names on the server's search path.
    for kind, styles, code in (("create", None, "bad_styles"), ("generate", ["vintage-film"], "bad_styles"),
                               ("create", ["no-such-style"], "bad_style"), ("create", ["../styles/x"], "bad_style")):
        with pytest.raises(BadRequest) as refused:
            svc.submit_job(tid, kind, ident, ["studio-grey"] if kind == "generate" else None, styles=styles,
                           options={"count": 2} if kind == "create" else {})
        assert refused.value.code == code, (kind, styles)
    assert "vintage-film" in refused.value.details["available"]
    for options in ({"count": 99}, {"reference": "/etc/passwd"}, {"sampler": "magic"}):
        with pytest.raises(BadRequest) as refused:
            svc.submit_job(tid, "create", ident, styles=["vintage-film"], options=options)
        assert refused.value.code == "bad_options", options
    created = _run_one(svc, tid, svc.submit_job(tid, "create", ident, styles=["vintage-film"],
                                                options={"count": 2, "size": 64, "steps": 2, "seed": 3})["id"])
    assert created["styles"] == ["vintage-film"] and created["result"]["identity_kind"] == "lora"
    assert [r["template"] for r in created["results"]] == ["vintage-film"] * 2
    assert all(svc.result_path(tid, r["id"]).stat().st_size > 0 for r in created["results"])
    assert [r["template"] for r in gen["results"]] == ["studio-grey"]
    # painted with the train job's LoRA (the identity's newest train/embed job), not a face embedding
    assert gen["result"]["identity_kind"] == "lora" and gen["result"]["identity_engine"] is None
    emb = _run_one(svc, tid, svc.submit_job(tid, "embed", ident, options={"min_photos": 3})["id"])
    assert Path(emb["result"]["file"]).suffix == ".safetensors"
