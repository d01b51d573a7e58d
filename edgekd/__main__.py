"""`python -m edgekd` is the `edgekd` command."""

from .cli import main

main(prog_name="edgekd")
