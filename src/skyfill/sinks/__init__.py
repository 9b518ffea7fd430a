"""Sinks: where the final dataset goes (Parquet by default)."""
