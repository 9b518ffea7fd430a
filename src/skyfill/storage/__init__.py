"""Durable files: crash-safe writes, Parquet options, sorted merges, the worker's output
segments, background prefetch and replication to shared storage (fsspec).

Generic: nothing here knows of jobs, AT Protocol or sinks; the engine and the sinks both
build on it."""
