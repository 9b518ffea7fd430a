"""skyfill: backfill AT Protocol repositories into analysis-ready datasets.

From Python (skyfill.api, loaded on first use, so `import skyfill` stays light):

    summary = skyfill.backfill(dids="dids.txt", job_id="j1")   # runs the job, or resumes it
    records = skyfill.open_dataset("j1")                        # a pyarrow dataset
"""

from __future__ import annotations

import os
import types

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~15 ms)

# Arrow's C++ code (the Parquet reader and writer among it) allocates from the default pool
# chosen when pyarrow first loads; `pyarrow.set_memory_pool` does not reach it. Its default,
# mimalloc, keeps freed memory: reading a 180k-row file row group by row group left ~75 MB
# more RSS than jemalloc. Chosen here, before any pyarrow import; a user's choice stands.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")

__version__ = "0.1.0"

if TYPE_CHECKING:  # what a type checker sees: the call, rather than the package
    from typing import Any

    from skyfill.api import backfill as backfill
    from skyfill.api import open_dataset as open_dataset
else:

    def open_dataset(*args: Any, **kwargs: Any) -> Any:
        """`skyfill.api.open_dataset`: a finished job's records (or repos) as a pyarrow
        dataset."""
        from skyfill.api import open_dataset

        return open_dataset(*args, **kwargs)

    def __getattr__(name: str) -> Any:
        if name == "backfill":  # the package, callable (see CallablePackage)
            import skyfill.backfill

            return skyfill.backfill
        raise AttributeError(f"module 'skyfill' has no attribute {name!r}")


class CallablePackage(types.ModuleType):
    """The class of the package `skyfill.backfill` (the job type), which is also the call
    `skyfill.backfill(...)` (`skyfill.api.backfill`): importing the package's modules
    makes `skyfill.backfill` the package, so the package itself answers the call."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from skyfill.api import backfill

        return backfill(*args, **kwargs)

    @property
    def __signature__(self) -> Any:  # what help() and IPython's `?` show
        import inspect

        from skyfill.api import backfill

        return inspect.signature(backfill)
