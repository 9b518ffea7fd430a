"""skyfill: backfill AT Protocol repositories into analysis-ready datasets."""

__version__ = "0.1.0"
