"""Seeing a job: progress (rich view or JSON log lines), structured logs, snapshots of a
job from its state store, the Prometheus exporter, the `monitor` view, the dashboard and
the evaluation report.

Nothing here is needed to run a job: the engine calls its `JobObserver` seam
(`engine.observer`), which `progress` implements, and the lower layers record latency
histograms and the log context (`telemetry`), which this package presents.
"""
