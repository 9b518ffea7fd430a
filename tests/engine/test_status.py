"""The job status transition table and the item rule, as data (engine/model.py)."""

from __future__ import annotations

import orjson
import pytest

from skyfill.engine.model import (
    ACTIVE_JOB_STATUSES,
    JOB_TRANSITIONS,
    InvalidTransition,
    ItemResult,
    ItemStatus,
    JobStatus,
    check_job_transition,
    item_may_become,
)
from skyfill.errors import Outcome


def test_every_status_has_its_row_and_leads_only_to_statuses() -> None:
    assert set(JOB_TRANSITIONS) == set(JobStatus)
    for targets in JOB_TRANSITIONS.values():
        assert targets <= set(JobStatus)


@pytest.mark.parametrize(
    ("old", "new", "allowed"),
    [
        (JobStatus.RUNNING, JobStatus.AGGREGATING, True),
        (JobStatus.RUNNING, JobStatus.COMPLETED, False),  # only through aggregation
        (JobStatus.AGGREGATING, JobStatus.COMPLETED, True),
        (JobStatus.STOPPED, JobStatus.RUNNING, True),  # resume
        (JobStatus.FAILED, JobStatus.AGGREGATING, True),  # resume in the aggregate phase
        (JobStatus.PAUSED, JobStatus.CANCELLED, True),  # cancel a paused job
        (JobStatus.COMPLETED, JobStatus.RUNNING, True),  # retry --failed
        (JobStatus.COMPLETED, JobStatus.FAILED, False),
        (JobStatus.COMPLETED, JobStatus.PAUSED, False),
        (JobStatus.PLANNING, JobStatus.COMPLETED, False),
        (JobStatus.CANCELLED, JobStatus.CANCELLED, True),  # a replayed write
    ],
)
def test_transitions(old: JobStatus, new: JobStatus, allowed: bool) -> None:
    assert old.may_become(new) is allowed
    if allowed:
        check_job_transition(old, new)
    else:
        with pytest.raises(InvalidTransition, match=f"{old} job cannot become {new}"):
            check_job_transition(old, new)


def test_active_statuses() -> None:
    assert {s for s in JobStatus if s.active} == ACTIVE_JOB_STATUSES
    assert {JobStatus.RUNNING, JobStatus.AGGREGATING} == ACTIVE_JOB_STATUSES


def test_items_get_one_outcome_and_only_failed_ones_are_planned_again() -> None:
    for outcome in Outcome:
        assert item_may_become(ItemStatus.PENDING, outcome)
        assert not item_may_become(outcome, Outcome.OK)
        assert item_may_become(outcome, ItemStatus.PENDING) is (outcome is Outcome.FAILED)
    assert not item_may_become(ItemStatus.PENDING, ItemStatus.PENDING)
    assert ItemStatus.OK == Outcome.OK and ItemStatus.FAILED == Outcome.FAILED


def test_an_item_result_carries_its_status_as_a_plain_string() -> None:
    result = ItemResult("did:plc:x", Outcome.NOT_FOUND)
    assert type(result.status) is str and result.status == "not_found"
    assert orjson.dumps({result.status: 1}) == b'{"not_found":1}'  # JSON keys must be str
