"""Progress of a long stage in its log: ``done / total`` at most every few seconds, and at the end.

Stages log through the standard ``logging`` module (logger ``tasks.<stage>``); under Prefect,
:func:`tasks.prefect_stage.forward_logs` sends those records to the task run's log, so a long embed of
real images shows how far it is instead of only heartbeats.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class ProgressLog:
    """Counts work done and logs ``<what>: done / total (percent), rate / s`` to ``logger`` at most every
    ``interval`` seconds, and once when the total is reached."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        total: int,
        *,
        interval: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.what, self.total, self.interval, self.clock = logger, what, total, interval, clock
        self.done = 0
        self.started = self.last = clock()

    def advance(self, count: int) -> None:
        """Record ``count`` more items done; log when the interval has passed or the work is complete."""
        self.done += count
        now = self.clock()
        if self.done >= self.total or now - self.last >= self.interval:
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            percent = 100.0 * self.done / self.total if self.total else 100.0
            self.logger.info(
                "%s: %s / %s (%.0f%%), %.0f / s",
                self.what,
                f"{self.done:,}",
                f"{self.total:,}",
                percent,
                rate,
            )
