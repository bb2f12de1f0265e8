"""The pod runtime's time: seconds for its timers, UTC for kubelet's stamps; tests fake it."""

from __future__ import annotations

import time
from datetime import datetime, timezone


class Clock:
    """The machine's clocks: back-offs, probe periods and grace periods count monotonic seconds."""

    def monotonic(self) -> float:
        return time.monotonic()

    def stamp(self) -> str:
        """Now, as kubelet writes it in a status or an event: UTC to the second."""
        return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
