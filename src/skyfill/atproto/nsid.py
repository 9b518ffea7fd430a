"""NSID syntax (Namespaced Identifiers, e.g. `app.bsky.feed.post`): the names of collections."""

from __future__ import annotations

import re

MAX_NSID_LENGTH = 317
# Domain authority (reversed, at least two segments) then a name that starts with a letter.
_NSID = re.compile(
    r"^[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+"
    r"\.[a-zA-Z][a-zA-Z0-9]{0,62}$"
)
# The beginning of an NSID: what may stand before a trailing `*` in a collection glob.
_NSID_PREFIX = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]*(\.[a-zA-Z0-9][a-zA-Z0-9-]*)*\.?$")


def is_nsid(text: str) -> bool:
    """Whether `text` is a syntactically valid NSID."""
    return len(text) <= MAX_NSID_LENGTH and _NSID.match(text) is not None


def is_nsid_prefix(text: str) -> bool:
    """Whether `text` can begin an NSID (e.g. `app.bsky.`, `app.bsky.graph.`, `app.bsky.feed.p`)."""
    return len(text) < MAX_NSID_LENGTH and _NSID_PREFIX.match(text) is not None
