"""The generic job engine: Job -> Phase -> TaskGroup -> Task -> Batch.

It plans batches, runs worker tasks with per-item checkpoints, writes task outputs
transactionally and aggregates them. It knows nothing of AT Protocol: a job type plugs
in as a `Handler`.
"""
