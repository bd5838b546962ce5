"""Captions for the training set: trigger word + class word (DreamBooth / kohya convention)."""

from __future__ import annotations

import re

from portrait.errors import ConfigError

from .config import PreprocessConfig

_WORD = re.compile(r"^[\w-]+$")


def caption(config: PreprocessConfig, extra: str = "") -> str:
    """`a photo of ohwx person` (config.caption_template), with optional extra words appended."""
    trigger = config.trigger_word.strip()
    if not _WORD.match(trigger):
        raise ConfigError(f"trigger word must be one word of letters, digits, _ or -, got {trigger!r}")
    text = config.caption_template.format(trigger=trigger, class_word=config.class_word.strip())
    return f"{text}, {extra}" if extra else text
