"""The backfill job type: DIDs in, every record of their repositories out."""
