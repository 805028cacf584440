"""Exponential backoff with full jitter, for reconnects and retries."""

from __future__ import annotations

import random


class Backoff:
    """Delays ``initial * factor**n`` capped at ``maximum``, each drawn uniformly in
    ``[delay/2, delay]`` so that many cameras do not retry in lockstep."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0,
                 rng: random.Random | None = None) -> None:
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt; each call makes the following one longer."""
        base = min(self.maximum, self.initial * self.factor ** min(self.attempts, 32))
        self.attempts += 1
        return self._rng.uniform(base / 2, base)

    def reset(self) -> None:
        """Back to the initial delay (after a success)."""
        self.attempts = 0
