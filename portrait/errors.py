"""Typed errors. The CLI turns them into messages and exit code 2; the API into 4xx JSON bodies."""

from __future__ import annotations

from pathlib import Path


class PortraitError(Exception):
    """Base class: a problem the user can act on (bad input, missing model, bad config)."""

    code = "error"

    def to_dict(self) -> dict:
        return {"error": self.code, "message": str(self)}


class ImageError(PortraitError):
    """An input image could not be used. `code` is one of the stable reason codes."""

    def __init__(self, path: str | Path | None, code: str, reason: str):
        self.path = str(path) if path is not None else None
        self.code = code
        self.reason = reason
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{reason}")

    def to_dict(self) -> dict:
        return {"error": self.code, "file": self.path, "message": str(self)}


class ModelMissingError(PortraitError):
    """A model's weight file is not where the manifest says it should be."""

    code = "model_missing"

    def __init__(self, model: str, path: str | Path, how: str):
        self.model = model
        self.path = str(path)
        self.how = how
        super().__init__(f"model '{model}' is missing: expected {self.path}. {how}")

    def to_dict(self) -> dict:
        return {"error": self.code, "model": self.model, "path": self.path, "message": str(self)}


class ModelHashError(PortraitError):
    """A model file is present but its sha256 does not match the manifest."""

    code = "model_bad_hash"

    def __init__(self, model: str, path: str | Path, expected: str, actual: str):
        self.model = model
        self.path = str(path)
        super().__init__(
            f"model '{model}' at {path} has sha256 {actual[:16]}…, expected {expected[:16]}…: "
            "the file is corrupt or a different version; download it again or fix the sha256 in models.toml"
        )


class ConfigError(PortraitError):
    """A configuration value (template.toml, models.toml, CLI option) is invalid."""

    code = "bad_config"


class TemplateError(PortraitError):
    """A template cannot be used (unreadable image, no face, bad template.toml)."""

    code = "bad_template"


class StyleError(PortraitError):
    """A style pack cannot be used (bad style.toml, a file it names is missing, no such style)."""

    code = "bad_style"


class NoPhotosError(PortraitError):
    """The photos folder holds no files to judge (empty, only hidden files or sub-folders, or missing)."""

    code = "no_photos"


class NotEnoughPhotosError(PortraitError):
    """Preprocessing accepted fewer photos than the minimum."""

    code = "not_enough_photos"


class Cancelled(PortraitError):
    """The job's cancel token was set: the job stopped (between photos, templates or variants, within one
    diffusion or training step) and wrote no result."""

    code = "cancelled"

    def __init__(self, message: str = "cancelled"):
        super().__init__(message)


def internal_error(exc: BaseException) -> dict:
    """The JSON body for an unexpected failure (a bug): its type and message, never a traceback."""
    return {"error": "internal", "message": f"unexpected {type(exc).__name__}: {exc} (please report this)"}


class LicenceError(PortraitError):
    """The licence policy (`--licence commercial` / PORTRAIT_LICENCE) excludes a model the job needs."""

    code = "licence_excluded"

    def __init__(self, model: str, licence: str, alternative: str, why: str):
        self.model = model
        self.licence = licence
        self.alternative = alternative
        instead = f"; use {alternative} instead" if alternative else ""
        super().__init__(f"model '{model}' is refused under --licence commercial: {why} (licence: {licence}){instead}")

    def to_dict(self) -> dict:
        return {"error": self.code, "model": self.model, "licence": self.licence, "alternative": self.alternative,
                "message": str(self)}
