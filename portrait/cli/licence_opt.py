"""`--licence any|commercial` for every command that loads models (run, batch, generate, preprocess,
train, embed). The policy itself lives in portrait.models.licence; this only enters it for the command."""

from __future__ import annotations

import functools
import os

import click

from ..models.licence import ENV_VAR, POLICIES, licence_policy


def licence_option(f):
    """Add --licence (env PORTRAIT_LICENCE) and run the command under that licence policy."""

    @click.option("--licence", "licence", type=click.Choice(POLICIES), default=None, envvar=ENV_VAR,
                  show_envvar=True, help="commercial: refuse every model whose licence excludes commercial use "
                  "(naming a commercial-safe alternative) [default: any].")
    @functools.wraps(f)
    def wrapper(*args, licence: str | None = None, **kwargs):
        # The CLI process runs one command: the policy also goes into the environment so worker
        # processes the command starts inherit it (the context variable does not cross processes).
        before = os.environ.get(ENV_VAR)
        if licence is not None:
            os.environ[ENV_VAR] = licence
        try:
            with licence_policy(licence):
                return f(*args, **kwargs)
        finally:  # in-process callers (tests, scripts) get their environment back
            if before is None:
                os.environ.pop(ENV_VAR, None)
            else:
                os.environ[ENV_VAR] = before

    return wrapper
