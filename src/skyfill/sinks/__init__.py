"""Sinks: where the final dataset goes (Parquet by default, SQLite or PostgreSQL on request)."""
