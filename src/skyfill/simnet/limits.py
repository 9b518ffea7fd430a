"""Rate limits enforced by simulated PDS hosts: a fixed window, as the reference PDS has,
answering with RateLimit-Limit/-Remaining/-Reset (epoch seconds) and 429 + Retry-After."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from skyfill.ratelimit.spec import RateSpec


@dataclass(slots=True)
class WindowLimit:
    spec: RateSpec
    window_start: float = 0.0
    used: int = 0
    served: int = 0
    limited: int = 0
    max_in_window: int = 0
    windows: list[int] = field(default_factory=list)
    """Requests admitted per finished window (for checks)."""

    def admit(self, now: float | None = None) -> tuple[bool, dict[str, str]]:
        """Count one request; returns (allowed, headers to send)."""
        now = time.time() if now is None else now
        if now >= self.window_start + self.spec.window:
            if self.used:
                self.windows.append(self.used)
            self.window_start, self.used = now, 0
        self.used += 1
        reset = self.window_start + self.spec.window
        allowed = self.used <= self.spec.requests
        if allowed:
            self.served += 1
            self.max_in_window = max(self.max_in_window, self.used)
        else:
            self.limited += 1
        headers = {
            "RateLimit-Limit": str(self.spec.requests),
            "RateLimit-Remaining": str(max(0, self.spec.requests - self.used)),
            "RateLimit-Reset": str(math.ceil(reset)),
            "RateLimit-Policy": f"{self.spec.requests};w={self.spec.window:g}",
        }
        if not allowed:
            headers["Retry-After"] = str(max(1, math.ceil(reset - now)))
        return allowed, headers

    def snapshot(self) -> dict:
        return {
            "limit": str(self.spec),
            "served": self.served,
            "limited": self.limited,
            "max_in_window": self.max_in_window,
        }
