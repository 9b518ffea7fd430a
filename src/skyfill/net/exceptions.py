"""Errors of the HTTP layer itself (the transient ones, timeouts and network failures, are
in `skyfill.errors`, since every layer raises them).

    TerminalError
    ├── PrivateNetworkRefused  an endpoint resolves to a private address -> failed
    └── UnaskedEncoding        a compressed answer the lean client did not ask for -> failed
"""

from __future__ import annotations

from skyfill.errors import Outcome, TerminalError


class PrivateNetworkRefused(TerminalError):
    """An endpoint resolves to a loopback/private/link-local address and that is not allowed."""

    error_class = "private_network"
    outcome = Outcome.FAILED


class UnaskedEncoding(TerminalError):
    """An answer came compressed though the lean HTTP client asked for no compression (it
    does not decompress; the aiohttp client does: `--http-client aiohttp`)."""

    error_class = "unasked_encoding"
    outcome = Outcome.FAILED
