"""The sink seam: every destination of the final dataset implements `Sink`."""

from __future__ import annotations

from typing import Any, Protocol

import pyarrow as pa


class Sink(Protocol):
    def write(self, records: pa.RecordBatchReader, repos: pa.RecordBatchReader) -> dict[str, Any]:
        """Write the job's records and repos (both streamed); return facts for the manifest."""
        ...
