"""One FetchTask's vocabulary, for the connection loop (``scheduler.connection``).

What a FetchTask came back with (:class:`Answered`, :class:`Unresolved`,
:class:`Refused`), how a failure is labelled in the metrics (:func:`classify`), how
long to wait before the next try (:func:`backoff`, :func:`jittered`), and what the
loop knows about a key whose answer it has not seen (:class:`KeyDoubt`). Plain
values and functions: the decisions are made in ``ConnectionLoop.run``.
"""

from __future__ import annotations

import random

import attrs

from scheduler.errors import ConnectError, RpcError, RpcTimeout
from scheduler.protocol import FetchTaskResponse

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
DOWN_BACKOFF_BASE = 30.0
DOWN_BACKOFF_CAP = 600.0



def backoff(attempt: int, rng: random.Random, *, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base·2^attempt)]."""
    return rng.uniform(0, min(cap, base * 2 ** min(attempt, 30)))


def jittered(interval: float, rng: random.Random) -> float:
    """``interval`` ± 10 %, so connections that started together drift apart."""
    return interval * rng.uniform(0.9, 1.1)


#: Empty answers in a row at ``fetch_interval`` before the wait starts to grow.
POLL_HOLD = 10
#: Each further empty answer multiplies the wait by this, up to ``fetch_interval_max``.
POLL_GROWTH = 1.5


@attrs.frozen
class PollPace:
    """How long an idle connection waits before its next FetchTask.

    ``fetch_interval`` while tasks come; after :data:`POLL_HOLD` empty answers in a
    row the wait grows by :data:`POLL_GROWTH` per empty answer up to
    ``fetch_interval_max``; the next task resets it. (An answer that filled its
    grant is followed by a FetchTask at once, without any wait.)

    Why a hold, and not back-off from the first empty answer: with jobs arriving at
    random (memoryless) times, a poll rate r gives a median pickup latency of about
    1/(2r) whatever the schedule, so every call saved costs latency while jobs keep
    coming. The hold keeps the configured interval through the short gaps of a busy
    period (bench figure 2) and saves calls where they buy nothing: a connection
    with no job for many intervals in a row (nights, weekends, idle instances).
    """

    empty: int = 0  # empty answers in a row
    interval: float = 0.0  # the wait after the last answer, before jitter

    def after(self, tasks: int, fetch_interval: float, fetch_interval_max: float) -> PollPace:
        if tasks:
            return PollPace(0, fetch_interval)
        n = self.empty + 1
        grown = fetch_interval * POLL_GROWTH ** max(0, n - POLL_HOLD)
        return PollPace(n, min(max(fetch_interval, fetch_interval_max), grown))


def classify(exc: RpcError) -> str:
    """The ``outcome`` label of a failed fetch."""
    if isinstance(exc, ConnectError):
        if exc.code in ("unauthenticated", "permission_denied"):
            return "unauthorized"
        if exc.code == "resource_exhausted" or exc.http_status == 429:
            return "throttled"
        if exc.code == "deadline_exceeded":
            return "timeout"
        return "error"
    return "timeout" if isinstance(exc, RpcTimeout) else "error"


# --- what one FetchTask came back with ----------------------------------------------


@attrs.frozen
class Answered:
    """The server answered: the key is settled, whatever the number of tasks."""

    response: FetchTaskResponse


@attrs.frozen
class Unresolved:
    """No usable answer: the server may have assigned tasks under the key. Keep it."""

    error: RpcError


@attrs.frozen
class Refused:
    """The server proved it did nothing: the key and the reservation can go."""

    error: RpcError


FetchOutcome = Answered | Unresolved | Refused


@attrs.define
class KeyDoubt:
    """What the loop knows about sending the pending request key (the key itself,
    its capacity and ``tasks_version`` are in the :class:`~scheduler.keys.KeyStore`)."""

    attempts: int = 0  # sends of the current pending key
    unresolved: bool = False  # its outcome is unknown (exported as a timestamp)
    logged: str | None = None  # the last error logged for it, so a repeat is not logged
