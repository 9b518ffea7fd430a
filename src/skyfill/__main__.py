"""Allows `python -m skyfill`."""

from skyfill.cli.main import main

main()
