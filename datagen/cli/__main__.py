"""`python -m datagen.cli`: every command but `serve` (which api/cli.py adds)."""

from datagen.cli import main

main()
