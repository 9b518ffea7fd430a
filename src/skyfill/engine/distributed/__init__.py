"""Distributed mode: stateless worker nodes that share one job through Redis.

The queue of worker tasks is a Redis stream with a consumer group (`redis_queue`); who
advances a phase or runs the aggregation is decided by leases (`lease`); `node` is the
loop every `skyfill worker` runs.
"""
