"""Train-free identity: face embeddings from the engine in use reach the UNet through IP-Adapter FaceID."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest


from helpers_diffusion import load_models, small_template, tiny_models  # noqa: E402

from portrait.errors import ConfigError  # noqa: E402
from portrait.generate.template_inpaint import PASS1, PASS2, Sitter, InpaintJob, TemplateInpaint  # noqa: E402
from portrait.generate.pipelines import (faceid_embeds, identity_tokens, identitynet_hook,  # noqa: E402
                                         load_faceid_adapter)
from portrait.models.adapters import adapter_id_dim  # noqa: E402
from portrait.identity.face_embedding import FaceIdentity, embed_identity, is_face_identity_file  # noqa: E402


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return tiny_models(tmp_path_factory.mktemp("tiny-faceid"))


@pytest.fixture(scope="session")
def models(tiny):
    return load_models(tiny, faceid=True)


@pytest.fixture(scope="session")
def hopper_identity(grace_hopper, face_analysis):
    return embed_identity([grace_hopper], face_analysis=face_analysis)


def test_identity_uses_the_engines_embedding_and_the_tiny_adapter_matches_it(hopper_identity, face_analysis, tiny):
    assert hopper_identity.engine == "dlib-resnet" and hopper_identity.metric == face_analysis.metric
    assert hopper_identity.dim == face_analysis.embedder.dim == 128
    assert abs(float(np.linalg.norm(hopper_identity.embedding)) - 1.0) < 1e-5
    assert adapter_id_dim(tiny["faceid"]) == 128 and adapter_id_dim(tiny["faceid512"]) == 512


def test_embed_identity_from_a_training_folder_saves_and_reloads(tmp_path, grace_hopper, astronaut, face_analysis):
    from PIL import Image

    train = tmp_path / "set" / "train"
    train.mkdir(parents=True)
    Image.fromarray(grace_hopper).save(train / "a.png")
    Image.fromarray(grace_hopper[:, ::-1].copy()).save(train / "b.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(train / "noface.png")
    ident = embed_identity(tmp_path / "set", face_analysis=face_analysis)
    assert ident.count == 2 and set(ident.sources) == {"a.png", "b.png"}
    path = ident.save(tmp_path / "identity_embedding.safetensors")
    assert is_face_identity_file(path)
    back = FaceIdentity.load(path)
    assert np.allclose(back.embedding, ident.embedding) and (back.engine, back.dim, back.count) == ("dlib-resnet", 128, 2)
    assert Sitter.from_path(path).kind == "faceid"
    assert face_analysis.distance(ident.embedding * ident.norm, face_analysis.analyze(grace_hopper)[0].embedding) < 0.3


def test_adapter_size_mismatch_is_a_clear_error(models, tiny, hopper_identity):
    pipe = models.pipeline(("canny",))
    with pytest.raises(ConfigError, match=r"expects 512-d .* 128-d .*dlib-resnet"):
        load_faceid_adapter(pipe, tiny["faceid512"], hopper_identity.dim, engine=hopper_identity.engine)


def _faceid_run(models, astronaut, grace_hopper, face_analysis, identity):
    tpl, tface = small_template(astronaut, face_analysis)
    ref_face = face_analysis.analyze(grace_hopper)[0]
    job = InpaintJob(tpl, tface, prompt="portrait", pass1=replace(PASS1, steps=4), pass2=replace(PASS2, steps=4), seed=2)
    return TemplateInpaint(models, crop_size=64)(job, identity, grace_hopper, ref_face)[0]


@pytest.mark.slow
def test_face_embedding_reaches_the_unet(models, astronaut, grace_hopper, face_analysis, hopper_identity):
    on = _faceid_run(models, astronaut, grace_hopper, face_analysis, Sitter(face=hopper_identity, faceid_scale=1.0))
    off = _faceid_run(models, astronaut, grace_hopper, face_analysis, Sitter(face=hopper_identity, faceid_scale=0.0))
    other = FaceIdentity(-hopper_identity.embedding, "dlib-resnet", "l2")
    swapped = _faceid_run(models, astronaut, grace_hopper, face_analysis, Sitter(face=other, faceid_scale=1.0))
    sel = on.mask > 0
    assert np.abs(on.image.astype(int) - off.image.astype(int))[sel].mean() > 0.5
    assert np.abs(on.image.astype(int) - swapped.image.astype(int))[sel].mean() > 0.5
    assert (on.image[~sel] == off.image[~sel]).all()


def test_identitynet_hook_feeds_face_tokens_to_the_controlnet(models, hopper_identity):
    """InstantID's IdentityNet: the ControlNet attends to the projected face tokens, not the prompt."""
    import torch

    pipe = models.pipeline(("canny",))
    load_faceid_adapter(pipe, models.faceid_adapter, hopper_identity.dim)
    tokens = identity_tokens(pipe.unet, faceid_embeds(hopper_identity, batch=1, guidance=False))
    net = models.controlnets["openpose"]
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))

    def run(text):
        with torch.no_grad():
            return net(sample, 10, encoder_hidden_states=text, controlnet_cond=cond, return_dict=False)[1]

    text_a, text_b = torch.randn(2, 1, 7, tokens.shape[-1], generator=torch.Generator().manual_seed(2))
    plain_a, plain_b = run(text_a), run(text_b)
    assert not torch.allclose(plain_a, plain_b)
    handle = identitynet_hook(net, tokens)
    try:
        hooked_a, hooked_b = run(text_a), run(text_b)
    finally:
        handle.remove()
    assert torch.allclose(hooked_a, hooked_b) and not torch.allclose(hooked_a, plain_a)
    assert torch.allclose(run(text_a), plain_a)


def test_embed_cli_writes_identity_and_reference(tmp_path, grace_hopper):
    from click.testing import CliRunner
    from PIL import Image

    from portrait.cli import cli

    (tmp_path / "train").mkdir()
    Image.fromarray(grace_hopper).save(tmp_path / "train" / "000_hopper.png")
    res = CliRunner().invoke(cli, ["embed", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert (info["dim"], info["engine"], info["photos"]) == (128, "dlib-resnet", 1)
    assert is_face_identity_file(info["file"]) and (tmp_path / "reference.png").is_file()
    res = CliRunner().invoke(cli, ["embed", str(tmp_path / "train" / "000_hopper.png")])
    assert res.exit_code == 2


def test_batched_templates_give_every_image_the_identity_once(models, astronaut, grace_hopper, face_analysis,
                                                              hopper_identity):
    """Two templates in one call: the UNet sees one unconditional and one identity row per image (diffusers
    repeats the adapter's embeddings per image, so passing one row per image used to give B x B rows)."""
    tpl, tface = small_template(astronaut, face_analysis)
    ref_face = face_analysis.analyze(grace_hopper)[0]
    jobs = [InpaintJob(tpl, tface, prompt="portrait", pass1=replace(PASS1, steps=4), pass2=replace(PASS2, steps=4),
                       seed=s) for s in (1, 2)]
    seen = []
    unet = models.components["unet"]
    handle = unet.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["added_cond_kwargs"]["image_embeds"][0].detach().clone()),
        with_kwargs=True)
    try:
        TemplateInpaint(models, crop_size=64)(jobs, Sitter(face=hopper_identity), grace_hopper, ref_face)
    finally:
        handle.remove()
    assert seen
    for rows in seen:
        rows = rows.numpy().reshape(rows.shape[0], -1)
        assert rows.shape[0] == 4 and np.allclose(rows[:2], 0)
        assert np.allclose(rows[2:], hopper_identity.vector(True), atol=1e-5)
