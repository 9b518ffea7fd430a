"""skyfill from Python (notebooks, scripts): the calls `skyfill.backfill(...)` and
`skyfill.open_dataset(...)` are these, loaded when first used (`import skyfill` stays light).

    summary = skyfill.backfill(dids=["did:plc:..."], workdir="skyfill-work", job_id="j1")
    records = skyfill.open_dataset("j1", workdir="skyfill-work")    # a pyarrow dataset

Errors are skyfill's own exceptions, never SystemExit:

    UsageError      a bad option, input, job id, or a job that does not exist (yet)
    SinkError       the sink (a database) cannot be written
    JobError        a task or the aggregation failed: the job is resumable
    Interrupted     the job was stopped (Ctrl-C, `skyfill pause`/`cancel`): resumable
"""

from skyfill.api.datasets import open_dataset
from skyfill.api.jobs import backfill
from skyfill.api.summary import JobSummary
from skyfill.cli.session import Interrupted
from skyfill.engine.runner import JobError
from skyfill.errors import UsageError
from skyfill.sinks.exceptions import SinkError

__all__ = [
    "Interrupted",
    "JobError",
    "JobSummary",
    "SinkError",
    "UsageError",
    "backfill",
    "open_dataset",
]
