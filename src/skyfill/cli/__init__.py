"""The `skyfill` command line."""
