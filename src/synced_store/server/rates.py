"""Token buckets: how the server slows a connection that sends faster than its rate."""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; starts full.

    :meth:`take` always takes (the balance may go negative) and returns how long the caller
    should wait for the balance to be back at zero: the reader sleeps that long before it
    reads the next frame, so a client over its rate is slowed down by TCP backpressure.
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, n: float, now: float) -> float:
        """Take ``n`` tokens at loop time ``now``; seconds to wait (0.0: within the rate)."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.stamp = now
        tokens -= n
        self.tokens = tokens
        return 0.0 if tokens >= 0 else -tokens / self.rate
