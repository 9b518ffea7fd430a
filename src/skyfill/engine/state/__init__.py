"""State stores: where a job's progress lives (SQLite embedded; Redis distributed: state.redis)."""

from skyfill.engine.state.base import JobRecord, Segment, StateStore

__all__ = ["JobRecord", "Segment", "StateStore"]
