"""The `portrait` command. Each subcommand group lives in its own module with a `register(group)`."""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import entry_points

import click

from .. import __version__
from . import startup

# One module per subcommand group, registered in this order (see docs/design.md section 5).
COMMAND_MODULES = (
    "preprocess_cmd",  # preprocess, samples
    "templates_cmd",  # templates list|show|add
    "run_cmd",  # run, batch
    "models_cmd",  # models list|verify|tiny
    "identity_cmd",  # train, embed
    "generate_cmd",  # generate
    "create_cmd",  # styles list|show|add, create
)
# Other packages add commands through this entry-point group (`server` adds serve, worker, tenant,
# migrate): each entry point names a `register(group)` function. `portrait` never imports them itself.
ENTRY_POINT_GROUP = "portrait.commands"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="portrait")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Studio portraits of a person from 5-20 ordinary photos, on your own machine."""
    startup.start(ctx)  # environment paths made absolute once; library warnings hidden unless --verbose


for _name in COMMAND_MODULES:
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}").register(cli)
startup.apply_policies(cli)  # every path parameter absolute, --verbose on every command

for _ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
    _ep.load()(cli)


def main() -> None:
    cli(prog_name="portrait")
