"""Reading the DID input file: one DID per line, comments, blanks, duplicates, bad lines.

A line's DID must be strict DID syntax of a method skyfill resolves (`did.validate_supported_did`);
a line that is not is reported with its number and reason, and left out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from skyfill.atproto.did import validate_supported_did
from skyfill.atproto.exceptions import InvalidDid
from skyfill.errors import UsageError

MAX_REPORTED = 20


@dataclass(slots=True)
class DidInput:
    dids: list[str] = field(default_factory=list)
    lines: int = 0
    duplicates: int = 0
    malformed: list[tuple[int, str]] = field(default_factory=list)
    """(line number, reason) for every line that is not a valid DID."""
    path_label: str = ""

    def warnings(self) -> list[str]:
        shown = [f"{self.path_label}:{n}: {reason}" for n, reason in self.malformed[:MAX_REPORTED]]
        if len(self.malformed) > MAX_REPORTED:
            shown.append(f"... and {len(self.malformed) - MAX_REPORTED} more malformed lines")
        return shown


def read_did_file(path: Path) -> DidInput:
    """Parse a DID file; raise UsageError if it cannot be read at all."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"DID file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"DID file is a directory: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read DID file {path}: {exc.strerror}") from None
    if b"\x00" in raw[:8192]:
        raise UsageError(f"DID file {path} looks binary; want one DID per line")
    text = raw.decode("utf-8", errors="replace")
    parsed = DidInput(path_label=str(path))
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        parsed.lines = number
        # Spaces and tabs around a DID (or before a comment) are the file's layout; anything
        # else is part of the DID and must pass its strict syntax (no-break spaces too).
        entry = line.split("#", 1)[0].strip(" \t")
        if not entry:
            continue
        try:
            did = validate_supported_did(entry)
        except InvalidDid as exc:
            parsed.malformed.append((number, exc.message))
            continue
        if did in seen:
            parsed.duplicates += 1
            continue
        seen.add(did)
        parsed.dids.append(did)
    return parsed
