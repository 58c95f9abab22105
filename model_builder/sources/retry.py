"""Bounded retries with exponential backoff for transient fetch failures.

A source marks a failure transient by raising `TransientFetchError` (network errors, HTTP 408,
429 and 5xx, S3 SlowDown); everything else is a verdict and is raised at once. The policy
comes from the environment so tests (and impatient clusters) can shorten it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

ATTEMPTS_ENV = "OPTIMODEL_FETCH_ATTEMPTS"
BACKOFF_ENV = "OPTIMODEL_FETCH_BACKOFF_SECONDS"

T = TypeVar("T")


class TransientFetchError(Exception):
    """One attempt failed in a way a later one may not; `retry_after` is the server's hint."""

    def __init__(self, what: str, *, retry_after: float | None = None) -> None:
        self.what = what
        self.retry_after = retry_after
        super().__init__(what)


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how patiently, a transient failure is retried."""

    attempts: int = 4
    backoff_seconds: float = 1.0
    max_delay_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetryPolicy:
        env = os.environ if env is None else env
        default = cls()
        try:
            attempts = int(env.get(ATTEMPTS_ENV, default.attempts))
            backoff = float(env.get(BACKOFF_ENV, default.backoff_seconds))
        except ValueError:
            return default
        return cls(attempts=max(1, attempts), backoff_seconds=max(0.0, backoff))

    def delay(self, failed_attempts: int, retry_after: float | None) -> float:
        """Seconds to wait after `failed_attempts` failures (the server's hint wins, capped)."""
        if retry_after is not None:
            return min(max(0.0, retry_after), self.max_delay_seconds)
        backoff: float = self.backoff_seconds * 2.0 ** (failed_attempts - 1)
        return min(backoff, self.max_delay_seconds)


def with_retries(
    attempt: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`attempt()`, retried on TransientFetchError; the last one is re-raised when all fail."""
    for number in range(1, policy.attempts + 1):
        try:
            return attempt()
        except TransientFetchError as error:
            if number == policy.attempts:
                raise
            sleep(policy.delay(number, error.retry_after))
    raise AssertionError("unreachable: the loop returns or raises")
