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
