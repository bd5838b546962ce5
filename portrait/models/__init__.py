"""Model manifest and loading: local files only, verified, cached per process."""

from .manifest import BUILTIN, Manifest, ModelSpec, ModelStatus, get_manifest

__all__ = ["BUILTIN", "Manifest", "ModelSpec", "ModelStatus", "get_manifest"]
