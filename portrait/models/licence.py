"""The licence policy: which models a job may load.

    any         every model (the default)
    commercial  only models whose licence allows commercial use (`commercial_use = true` in the
                manifest or models.toml); a model whose licence excludes it, or is unknown, is refused
                with a LicenceError naming it and a commercial-safe alternative

The policy comes from `licence_policy(...)` (a context manager the CLI's `--licence` option and a
server request enter) or else from the PORTRAIT_LICENCE environment variable. `Manifest.require`
checks it every time a model is resolved for loading, so no caller can skip it; `Manifest.available`
reports refused models as unavailable, so automatic engine choices pass over them.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, Optional, Protocol

from ..errors import ConfigError, LicenceError


class ModelSpec(Protocol):
    """What the policy reads of a model (manifest.ModelSpec has it). A protocol, not an import: the manifest
    calls the policy, so the policy must not import the manifest (no import circle)."""

    name: str
    licence: str
    commercial_use: Optional[bool]
    alternative: str


POLICIES: tuple[str, ...] = ("any", "commercial")
ENV_VAR = "PORTRAIT_LICENCE"

_POLICY: ContextVar[str | None] = ContextVar("portrait_licence_policy", default=None)


def _checked(policy: str) -> str:
    value = policy.strip().lower()
    if value not in POLICIES:
        raise ConfigError(f"licence policy {policy!r}: choose one of {', '.join(POLICIES)} "
                          f"(--licence or {ENV_VAR})")
    return value


def current_policy() -> str:
    """The policy in force: the innermost `licence_policy(...)`, else $PORTRAIT_LICENCE, else 'any'."""
    policy = _POLICY.get()
    if policy is not None:
        return policy
    return _checked(os.environ.get(ENV_VAR) or "any")


@contextmanager
def licence_policy(policy: str | None) -> Iterator[str]:
    """Run the block under `policy` ('any' | 'commercial'); None keeps the surrounding one."""
    if policy is None:
        yield current_policy()
        return
    token = _POLICY.set(_checked(policy))
    try:
        yield _POLICY.get() or "any"
    finally:
        _POLICY.reset(token)


def refusal(spec: ModelSpec, policy: str | None = None) -> str | None:
    """Why `policy` refuses `spec`, or None when it may be loaded."""
    policy = _checked(policy) if policy is not None else current_policy()
    if policy == "any" or spec.commercial_use is True:
        return None
    if spec.commercial_use is False:
        return "its licence excludes commercial use"
    return ("its licence is not confirmed for commercial use (check it, then set commercial_use = true under "
            f"[models.{spec.name}] in models.toml)")


def allowed(spec: ModelSpec, policy: str | None = None) -> bool:
    return refusal(spec, policy) is None


def check_licence(spec: ModelSpec, policy: str | None = None) -> None:
    """Raise LicenceError when the policy refuses `spec`, naming it and a commercial-safe alternative."""
    why = refusal(spec, policy)
    if why is not None:
        raise LicenceError(spec.name, spec.licence, spec.alternative, why)
