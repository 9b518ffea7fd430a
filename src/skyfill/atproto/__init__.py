"""AT Protocol building blocks: DIDs, identity, XRPC, CAR files, the MST and records.

Nothing here knows about jobs, state stores or sinks.
"""
