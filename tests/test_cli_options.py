"""The command line's numeric options come from the job configs: the same range and default, so a value
the CLI takes is one the job takes (and the API, which builds the same configs), and the other way round."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from portrait.cli import cli
from portrait.jobs.configs import GenerateConfig, TrainConfig
from portrait.jobs import RunConfig

COMMANDS = (("run", RunConfig), ("batch", RunConfig), ("generate", GenerateConfig), ("train", TrainConfig))


@pytest.mark.parametrize("command, config", COMMANDS)
def test_every_limited_field_is_an_option_with_the_configs_range_and_default(command, config):
    params = {p.name: p for p in cli.commands[command].params}
    for field, (lo, hi) in config.LIMITS.items():
        if field not in params:
            continue  # not offered on this command (resolution on run: the templates decide)
        p = params[field]
        assert isinstance(p.type, (click.IntRange, click.FloatRange)), (command, field)
        assert (p.type.min, p.type.max) == (lo, hi), (command, field)
        assert p.default == config.__dataclass_fields__[field].default, (command, field)
    shared = {"steps", "upscale_factor", "inpaint_size", "variants", "max_tries"} if config is RunConfig else set()
    assert shared <= set(params), f"{command} lacks {shared - set(params)}"


def test_the_configs_limits_are_what_the_cli_accepts_and_refuses(tmp_path):
    """--upscale-factor 8 and --steps 500 are RunConfig's maxima (the CLI once stopped at 4 and 200); one
    step beyond is refused before anything runs, naming the range."""
    run = RunConfig(upscale_factor=8.0, steps=500, inpaint_size=4096)
    assert (run.upscale_factor, run.steps, run.inpaint_size) == (8.0, 500, 4096)
    for option, value, shown in (("--upscale-factor", "8.5", "1.0<=x<=8.0"), ("--steps", "501", "1<=x<=500"),
                                 ("--inpaint-size", "4104", "64<=x<=4096")):
        r = CliRunner().invoke(cli, ["run", str(tmp_path), "--template", "studio-grey", "--out",
                                     str(tmp_path / "out"), option, value])
        assert r.exit_code == 2 and shown in r.output, (option, r.output)
    assert not (tmp_path / "out").exists()
