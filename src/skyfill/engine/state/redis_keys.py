"""Every Redis key name used by `RedisStateStore`, in one place.

All keys of a job share the prefix `skyfill:{<job_id>}:`. The braces are a Redis Cluster
hash tag: every key of one job hashes to the same slot, so multi-key transactions
(MULTI/EXEC) work on a cluster too.

Layout (`P` = the prefix):

    P job                     hash    the job record (fields of JobRecord; absent = None)
    P stats                   hash    stats name -> JSON
    P samples                 zset    the recorded timeline: sample JSON scored by its time
    P batch:<batch_id>        hash    phase, grp, item_count
    P batch_items:<batch_id>  zset    item keys of the batch (all scores 0: ordered by key)
    P batch_pending:<batch_id> zset   its items with status pending (scores 0)
    P tasks                   list    task ids in creation order
    P task:<task_id>          hash    the task row (fields as the SQLite `tasks` columns)
    P task_items:<task_id>    set     keys of items whose outcome the task recorded last
    P segments:<task_id>      hash    seq -> JSON {"path", "rows"}
    P items                   zset    every item key (scores 0: ordered by key)
    P item:<key>              hash    the item row (fields as the SQLite `items` columns)
    P item_status             hash    item status -> count
    P failed                  zset    keys of failed items (scores 0)
    P failed_retryable        zset    keys of failed, retryable items (scores 0)
    P completions             zset    keys of items with an outcome, scored by its time
    P queue                   stream  worker tasks to run (field task_id); consumer group
                                      `workers` (distributed mode: engine/distributed/)
    P lock:<name>             string  a lease (owner id, with a TTL): who advances a phase
    P workers                 hash    worker id -> JSON of its last heartbeat

Outside any job (`skyfill:` only):

    skyfill:jobs              hash    job id -> JSON {"workdir", "created_at"}: the jobs
                                      that `skyfill worker` can serve
    skyfill:ratelimit:<host>  zset    the shared sliding-window log of one host's requests
                                      (written by ratelimit/redis_budget.py, which names it)
"""

from __future__ import annotations

from dataclasses import dataclass

JOBS_KEY = "skyfill:jobs"
QUEUE_GROUP = "workers"


@dataclass(frozen=True, slots=True)
class RedisKeys:
    job_id: str

    @property
    def prefix(self) -> str:
        return f"skyfill:{{{self.job_id}}}:"

    @property
    def job(self) -> str:
        return self.prefix + "job"

    @property
    def stats(self) -> str:
        return self.prefix + "stats"

    @property
    def samples(self) -> str:
        return self.prefix + "samples"

    def batch(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{batch_id}"

    def batch_items(self, batch_id: str) -> str:
        return f"{self.prefix}batch_items:{batch_id}"

    def batch_pending(self, batch_id: str) -> str:
        return f"{self.prefix}batch_pending:{batch_id}"

    @property
    def tasks(self) -> str:
        return self.prefix + "tasks"

    def task(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    def task_items(self, task_id: str) -> str:
        return f"{self.prefix}task_items:{task_id}"

    def segments(self, task_id: str) -> str:
        return f"{self.prefix}segments:{task_id}"

    @property
    def items(self) -> str:
        return self.prefix + "items"

    def item(self, key: str) -> str:
        return f"{self.prefix}item:{key}"

    @property
    def item_status(self) -> str:
        return self.prefix + "item_status"

    @property
    def failed(self) -> str:
        return self.prefix + "failed"

    @property
    def failed_retryable(self) -> str:
        return self.prefix + "failed_retryable"

    @property
    def completions(self) -> str:
        return self.prefix + "completions"

    @property
    def queue(self) -> str:
        return self.prefix + "queue"

    def lock(self, name: str) -> str:
        return f"{self.prefix}lock:{name}"

    @property
    def workers(self) -> str:
        return self.prefix + "workers"


JOB_KEY_PATTERN = "skyfill:{*}:job"
"""Matches the job hash of every job on a server (for SCAN: listing the jobs)."""


def job_id_of(job_key: str) -> str | None:
    """The job id in a job hash's key (`skyfill:{<job_id>}:job`), or None for another key."""
    if job_key.startswith("skyfill:{") and job_key.endswith("}:job"):
        return job_key[len("skyfill:{") : -len("}:job")]
    return None
