"""`python -m misdirection.cli`: the same entry point as the `misdirection` script."""

from misdirection.cli import main

main()
