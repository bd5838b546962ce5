"""`python -m portrait ...`: the same as the `portrait` command."""

from .cli import main

main()
