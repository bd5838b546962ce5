"""What every `portrait` command does before its own work: one policy, applied to every command.

- Paths from the environment (PORTRAIT_MODELS_DIR, ...) and every path option or argument are made
  absolute against the current directory once, when they enter, so nothing joins them twice and every
  path the CLI prints can be used from anywhere.
- Libraries' warnings (diffusers, transformers, peft, huggingface_hub, torch deprecations) are kept out
  of the CLI's output unless the command gets `--verbose`.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import click

from ..paths import absolute, resolve_env_paths

# Loggers of the libraries under the diffusion stack; their warnings are for developers, not users.
LIBRARY_LOGGERS = ("diffusers", "transformers", "peft", "huggingface_hub", "accelerate", "torch")
# diffusers / transformers configure their loggers on import from these variables.
_VERBOSITY_ENV = ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY", "HF_HUB_VERBOSITY")
_LIBRARY_MODULES = r"(diffusers|transformers|peft|huggingface_hub|accelerate|torch|torchvision|timm|spandrel)(\.|$)"


def quiet_libraries(ctx: click.Context) -> None:
    """Hide library warnings for the rest of this command (restored when the command ends)."""
    ctx.with_resource(warnings.catch_warnings())
    warnings.filterwarnings("ignore", module=_LIBRARY_MODULES)
    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    for name in _VERBOSITY_ENV:
        os.environ.setdefault(name, "error")
    _set_levels(logging.ERROR, ctx)


def _set_levels(level: int, ctx: click.Context) -> None:
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        old = logger.level
        logger.setLevel(level)
        ctx.call_on_close(lambda logger=logger, old=old: logger.setLevel(old))


def _verbose(ctx: click.Context, _param, value: bool) -> None:
    if not value:
        return
    warnings.resetwarnings()
    warnings.simplefilter("default")
    for name in _VERBOSITY_ENV:
        if os.environ.get(name) == "error":
            os.environ[name] = "warning"
    _set_levels(logging.WARNING, ctx)


VERBOSE = dict(is_flag=True, expose_value=False, is_eager=True, callback=_verbose,
               help="Show the libraries' own warnings (diffusers, transformers, peft, torch).")


def _absolute_type(param_type: click.Path) -> None:
    """Make a click.Path parameter type return absolute paths (of the type it returned before)."""
    if getattr(param_type, "_portrait_absolute", False):
        return
    convert = param_type.convert

    def to_absolute(value, param, ctx):
        v = convert(value, param, ctx)
        if v is None or v == "-" or not isinstance(v, (str, os.PathLike)):
            return v
        a = absolute(os.fsdecode(v))
        return a if isinstance(v, Path) else type(v)(os.fsencode(a) if isinstance(v, bytes) else str(a))

    param_type.convert = to_absolute
    param_type._portrait_absolute = True


def apply_policies(group: click.Group) -> None:
    """Walk every command under `group`: absolute path parameters, and --verbose on each leaf command."""
    for cmd in group.commands.values():
        for p in cmd.params:
            if isinstance(p.type, click.Path):
                _absolute_type(p.type)
        if isinstance(cmd, click.Group):
            apply_policies(cmd)
        elif not any("--verbose" in p.opts for p in cmd.params):
            cmd.params.append(click.Option(["--verbose"], **VERBOSE))


def start(ctx: click.Context) -> None:
    """The group callback's work: environment paths made absolute, library warnings hidden."""
    resolve_env_paths()
    quiet_libraries(ctx)
