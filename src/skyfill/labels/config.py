"""The label follower's configuration, and the flags of `skyfill labels` that set it."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from skyfill.atproto.identity.plc import DEFAULT_PLC_URL
from skyfill.errors import UsageError
from skyfill.flags import check_ranges, flag
from skyfill.sinks.factory import parse_sink_url

_STREAM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def parse_labelers(values: list[str] | tuple[str, ...]) -> list[str]:
    """http(s) URLs, without a trailing slash, each once; raises UsageError."""
    urls = []
    for value in values:
        url = str(value).strip().rstrip("/")
        if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
            raise UsageError(f"from-labeler must be an http(s) URL, not {value!r}")
        urls.append(url)
    return list(dict.fromkeys(urls))


@dataclass(frozen=True, kw_only=True, slots=True)
class LabelsConfig:
    """A field with `flag(...)` metadata is a flag of `skyfill labels` (and a key of its
    `--config` file, and a SKYFILL_* variable)."""

    from_labelers: list[str] = field(
        default_factory=list,
        metadata=flag(
            name="from-labeler",
            multiple=True,
            metavar="URL",
            help="A labeler whose label stream (com.atproto.label.subscribeLabels) to follow; "
            "repeatable.",
        ),
    )
    sink: str = field(
        default="",
        metadata=flag(
            help="Where labels go: sqlite:///PATH or postgresql://… (the `labels` table and the "
            "`labels_current` view), or a directory (an append-only Parquet label log).",
        ),
    )
    stream_id: str = field(
        default="",
        metadata=flag(
            help="Name of this stream's state under WORKDIR/streams/; default: labels-<host>-"
            "<port> (labels-<hash> for several labelers). Run the same command again to resume.",
        ),
    )
    cursor: int | None = field(
        default=None,
        metadata=flag(
            min=0,
            metavar="SEQ",
            help="Start each labeler the sink holds no cursor for after this seq "
            "(default: 0, every label it serves).",
        ),
    )
    until_live: bool = field(
        default=False,
        metadata=flag(
            help="Stop (exit 0, with a summary) once caught up with every labeler's head; "
            "otherwise keep following."
        ),
    )
    plc_url: str = field(
        default=DEFAULT_PLC_URL,
        metadata=flag(help="PLC directory used to resolve the labelers' did:plc."),
    )
    batch_size: int = field(
        default=500,
        metadata=flag(min=1, help="Labels per sink transaction (the cursor is saved with each)."),
    )
    flush_seconds: float = field(
        default=2.0,
        metadata=flag(
            min=0,
            min_open=True,
            help="Longest time between sink transactions while labels come.",
        ),
    )
    allow_private_network: bool = field(
        default=False,
        metadata=flag(
            help="Allow labelers and PLC on loopback/private addresses (tests, local networks)."
        ),
    )

    def __post_init__(self) -> None:
        check_ranges(self)
        if not self.from_labelers:
            raise UsageError("give a labeler to follow: --from-labeler URL")
        object.__setattr__(self, "from_labelers", parse_labelers(self.from_labelers))
        if not self.sink:
            raise UsageError("give a sink: --sink sqlite:///PATH, postgresql://… or a directory")
        if "://" in self.sink:
            parse_sink_url(self.sink)  # a malformed URL is said before anything is made
        if self.stream_id and not _STREAM_ID.match(self.stream_id):
            raise UsageError(f"stream-id: letters, digits, . _ - only, not {self.stream_id!r}")
        if not self.plc_url.startswith(("http://", "https://")):
            raise UsageError(f"plc-url must be an http(s) URL, not {self.plc_url!r}")
        if not self.stream_id:
            object.__setattr__(self, "stream_id", default_stream_id(self.from_labelers))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_stream_id(urls: list[str]) -> str:
    """`http://localhost:2585` -> `labels-localhost-2585`; several labelers ->
    `labels-<hash of their URLs>` (the same for the same labelers, in any order)."""
    if len(urls) == 1:
        rest = urls[0].split("://", 1)[1]
        return ("labels-" + re.sub(r"[^A-Za-z0-9.]+", "-", rest).strip("-"))[:128]
    digest = hashlib.sha256("\n".join(sorted(urls)).encode()).hexdigest()[:12]
    return f"labels-{digest}"
