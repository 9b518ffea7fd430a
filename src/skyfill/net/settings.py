"""How skyfill talks HTTP (timeouts, limits, the address guard's switch, its user agent),
without any HTTP client: both transports (`net/transport.py`) read it."""

from __future__ import annotations

from dataclasses import dataclass

from skyfill import __version__

USER_AGENT = f"skyfill/{__version__} (+https://github.com/skyfill/skyfill)"


@dataclass(frozen=True, kw_only=True, slots=True)
class HttpSettings:
    """How skyfill talks HTTP."""

    connect_timeout: float = 10.0
    """Seconds to establish a connection."""
    read_timeout: float | None = 60.0
    """Seconds of silence allowed between two chunks of a response."""
    total_timeout: float | None = 900.0
    """Seconds for one whole request, download included."""
    max_connections: int = 256
    """Open connections across all hosts."""
    allow_private_network: bool = False
    """Allow endpoints on loopback/private/link-local addresses."""
