"""Seeing a job: progress (rich view or JSON log lines), structured logs, latency
histograms, snapshots of a job from its state store, the Prometheus exporter, the
`monitor` view, the dashboard and the evaluation report.

Nothing here is needed to run a job; the engine only calls the `Progress` seam and the
backfill side only records latency histograms (`histogram`).
"""
