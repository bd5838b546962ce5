"""Faults injected into real code, for tests of how one failure is contained."""

from __future__ import annotations


def break_fusion(monkeypatch, message: str = "injected fault", narrower_than: int | None = None) -> None:
    """portrait.post.fusion.fuse raises ValueError(message): on every template, or only on templates whose
    image is narrower than `narrower_than` px (500: studio-grey, 480 px wide, fails; navy-formal, 512, works)."""
    from portrait.post import fusion

    real = fusion.fuse

    def fuse(template_rgb, *args, **kwargs):
        if narrower_than is None or template_rgb.shape[1] < narrower_than:
            raise ValueError(message)
        return real(template_rgb, *args, **kwargs)

    monkeypatch.setattr(fusion, "fuse", fuse)
