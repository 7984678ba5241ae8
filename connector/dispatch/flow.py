"""Per-target flow control: the token buckets of ``rate``, and the time each target
spent held back. Pure (the caller passes the time); the coordinator thread only.

``max_in_flight`` is counted where the calls are (:meth:`TargetWorkers.room
<connector.dispatch.delivery.TargetWorkers.room>`); ``rate`` here. An action held back
stays in its lane, in the outbox: nothing is dropped and no attempt is counted, and it
counts towards the pipeline's ``outbox_max_pending``, so a throttled target pauses the
Kafka partitions once enough actions wait (backpressure) instead of piling up in memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from connector.dispatch.lanes import LaneKey
from connector.targets.base import FlowLimits, Target

__all__ = ["FlowControl", "TokenBucket"]

KEY_BUCKETS_KEPT = 1024  # per-key buckets beyond this are pruned of the full ones


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; starts full.

    In any window of ``t`` seconds it grants at most ``burst + rate * t`` tokens (it holds
    at most ``burst`` at the start and gains ``rate * t``), and a caller that always asks
    gets at least ``floor(burst + rate * t) - 1`` over the first ``t`` seconds.
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:  # a clock that goes back gives nothing (monotonic expected)
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def available(self, now: float) -> int:
        """Whole tokens that may be taken now."""
        self._refill(now)
        return math.floor(self.tokens)

    def take(self, n: int, now: float) -> int:
        """Take up to ``n`` tokens; return how many were granted."""
        granted = max(0, min(n, self.available(now)))
        self.tokens -= granted
        return granted

    def wait(self, now: float) -> float:
        """Seconds until a whole token is there (0: now)."""
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.rate)

    def full(self, now: float) -> bool:
        """Whether it holds ``burst`` again (then it is as good as a new one)."""
        self._refill(now)
        return self.tokens >= self.burst


class FlowControl:
    """The rate limits of the dispatcher's targets, per round.

    Each round: :meth:`begin` (the targets' room narrowed by their target-wide bucket),
    then for each action handed out :meth:`key_room` and :meth:`took`, and :meth:`held`
    for a target that had an action due it could not take. :attr:`throttled_seconds` is
    the time each target spent with due actions held back (by its ``max_in_flight``, its
    ``concurrency`` or its ``rate``), counted round to round; :meth:`wake_in` says when a
    bucket has a token again, so the coordinator does not sleep past it.
    """

    def __init__(self) -> None:
        self._limits: dict[str, FlowLimits] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._key_buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self._held: set[str] = set()
        self._round_at: float | None = None
        self._now = 0.0
        self._wake_in: float | None = None
        self.throttled_seconds: dict[str, float] = {}

    def begin(self, targets: Mapping[str, Target], room: dict[str, int], now: float) -> None:
        """Start a round at ``now`` (monotonic seconds): narrow ``room`` in place."""
        if self._round_at is not None and self._held:
            elapsed = max(0.0, now - self._round_at)
            for name in self._held:
                self.throttled_seconds[name] = self.throttled_seconds.get(name, 0.0) + elapsed
        self._round_at = self._now = now
        self._held = set()
        self._wake_in = None
        for name, target in targets.items():
            limits = target.flow
            if self._limits.get(name) != limits:  # new, or changed by a reload: fresh buckets
                self._limits[name] = limits
                self._buckets.pop(name, None)
                for key in [k for k in self._key_buckets if k[0] == name]:
                    del self._key_buckets[key]
            if limits.per_second is None or limits.per_key:
                continue
            bucket = self._buckets.get(name)
            if bucket is None:
                bucket = self._buckets[name] = TokenBucket(limits.per_second, limits.capacity, now)
            room[name] = max(0, min(room.get(name, 0), bucket.available(now)))
        if len(self._key_buckets) > KEY_BUCKETS_KEPT:
            for key in [k for k, b in self._key_buckets.items() if b.full(now)]:
                del self._key_buckets[key]

    def key_room(self, target: Target, lane: LaneKey) -> int | None:
        """How many actions of ``lane``'s key may go now (None: no per-key limit)."""
        limits = target.flow
        if limits.per_second is None or not limits.per_key:
            return None
        bucket = self._key_buckets.get(lane)
        if bucket is None:
            bucket = self._key_buckets[lane] = TokenBucket(
                limits.per_second, limits.capacity, self._now
            )
        return bucket.available(self._now)

    def took(self, target: Target, lane: LaneKey, n: int) -> None:
        """``n`` actions of ``lane`` handed to ``target``: their tokens are spent."""
        limits = target.flow
        if limits.per_second is None:
            return
        bucket = self._key_buckets.get(lane) if limits.per_key else self._buckets.get(lane[0])
        if bucket is not None:
            bucket.take(n, self._now)

    def held(self, name: str, target: Target | None = None, lane: LaneKey | None = None) -> None:
        """Target ``name`` had an action due that did not go this round."""
        self._held.add(name)
        if target is None or target.flow.per_second is None:
            return
        bucket = (
            self._key_buckets.get(lane) if target.flow.per_key and lane else self._buckets.get(name)
        )
        if bucket is not None:
            wait = bucket.wait(self._now)
            if wait > 0 and (self._wake_in is None or wait < self._wake_in):
                self._wake_in = wait

    def wake_in(self) -> float | None:
        """Seconds until a bucket that held an action back this round has a token."""
        return self._wake_in

    def forget(self, names: set[str]) -> None:
        """Targets no longer configured: their buckets go (their counts stay)."""
        for name in names:
            self._limits.pop(name, None)
            self._buckets.pop(name, None)
        for key in [k for k in self._key_buckets if k[0] in names]:
            del self._key_buckets[key]
