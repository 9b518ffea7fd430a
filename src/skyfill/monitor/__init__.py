"""Seeing a job: progress on a terminal or as JSON log lines."""
