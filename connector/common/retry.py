"""How often and how late a failed delivery is tried again: the numbers only.

A leaf (standard library only), so the configuration can build a policy without loading
the dispatcher (:class:`connector.dispatch.Dispatcher`), which is what applies it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """In-call retries (short, tenacity) and durable retries across rounds."""

    max_attempts: int = 8  # failed attempts before the dead-letter table
    inline_attempts: int = 3  # tries within one call for a transient error
    inline_wait: float = 0.05  # first in-call backoff, doubling
    base_delay: float = 1.0  # first durable retry delay, doubling, with jitter
    max_delay: float = 300.0

    def next_delay(self, attempts: int) -> float:
        delay: float = min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1))
        return delay * random.uniform(0.8, 1.2)
