"""portrait: studio portraits of a person from their ordinary photos."""

__version__ = "0.1.0"
