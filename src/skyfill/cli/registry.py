"""Job types by name: how `resume` rebuilds a job's handler from its stored config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from skyfill.backfill.config import BackfillConfig
from skyfill.backfill.handler import BackfillHandler
from skyfill.engine.handler import Handler
from skyfill.errors import UsageError

JOB_TYPES: dict[str, Callable[[dict[str, Any]], Handler]] = {
    "backfill": lambda config: BackfillHandler(BackfillConfig.from_dict(config)),
}


def handler_for(job_type: str, config: dict[str, Any]) -> Handler:
    try:
        factory = JOB_TYPES[job_type]
    except KeyError:
        raise UsageError(f"unknown job type {job_type!r}") from None
    return factory(config)
