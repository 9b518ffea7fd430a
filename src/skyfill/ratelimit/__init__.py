"""Rate limits and resources: per-host token buckets that learn from the server's headers,
a global concurrency cap, and a memory gate."""
