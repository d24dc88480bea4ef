"""Fault plans: what an unreliable Forgejo (or the network in front of it) does to RPCs.

Each instance owns one ``FaultInjector`` whose draws all come from one seeded
``random.Random``, so a run with the same seed and the same request sequence fails
the same way. A probability of 0 draws nothing, so adding a fault kind to a plan
never shifts the draws of the others unless it is actually enabled.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable

import attrs


def _probability(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be a probability in [0, 1], got {value}")


def _windows(value: Iterable[Iterable[float]]) -> tuple[tuple[float, float], ...]:
    out: list[tuple[float, float]] = []
    for item in value:
        start, end = (float(x) for x in item)
        if end < start:
            raise ValueError(f"stall window ends before it starts: {(start, end)}")
        out.append((start, end))
    return tuple(out)


@attrs.frozen
class FaultPlan:
    """Per-instance fault probabilities. All apply to FetchTask unless named otherwise.

    - ``drop_after_assign``: assign and record the tasks, then close the connection without
      answering (only for answers that carry tasks; losing an empty answer is harmless).
    - ``error_5xx``: answer 503 ``unavailable`` before assigning anything.
    - ``internal_error``: answer 500 ``internal`` before assigning anything.
    - ``reset_before_assign``: RST the connection before assigning anything.
    - ``delay``: seconds added to every FetchTask answer, *after* assignment (a slow server:
      a client that gives up meanwhile has had tasks assigned that it never received).
    - ``stall_windows``: ``(start, end)`` seconds since the simulator started; a FetchTask
      arriving inside a window is never answered and assigns nothing; the call hangs until
      the client goes away.
    - ``fail_update_log`` / ``fail_update_task``: 503 for UpdateLog / UpdateTask (before any
      effect), to exercise reporter retries.
    """

    drop_after_assign: float = attrs.field(default=0.0, validator=_probability)
    error_5xx: float = attrs.field(default=0.0, validator=_probability)
    internal_error: float = attrs.field(default=0.0, validator=_probability)
    reset_before_assign: float = attrs.field(default=0.0, validator=_probability)
    delay: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    stall_windows: tuple[tuple[float, float], ...] = attrs.field(default=(), converter=_windows)
    fail_update_log: float = attrs.field(default=0.0, validator=_probability)
    fail_update_task: float = attrs.field(default=0.0, validator=_probability)


class PreFault(enum.Enum):
    """What happens to a FetchTask before the server looks at the queue."""

    STALL = "stall"
    RESET = "reset"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


@attrs.define
class FaultInjector:
    plan: FaultPlan
    rng: random.Random
    injected: dict[str, int] = attrs.field(factory=dict)

    def _draw(self, p: float) -> bool:
        return p > 0.0 and (p >= 1.0 or self.rng.random() < p)

    def _count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1

    def before_fetch(self, since_start: float) -> PreFault | None:
        if any(start <= since_start < end for start, end in self.plan.stall_windows):
            self._count("stall")
            return PreFault.STALL
        for kind, p in (
            (PreFault.RESET, self.plan.reset_before_assign),
            (PreFault.UNAVAILABLE, self.plan.error_5xx),
            (PreFault.INTERNAL, self.plan.internal_error),
        ):
            if self._draw(p):
                self._count(kind.value)
                return kind
        return None

    def drop_answer(self) -> bool:
        if self._draw(self.plan.drop_after_assign):
            self._count("drop_after_assign")
            return True
        return False

    def fail_update_log(self) -> bool:
        if self._draw(self.plan.fail_update_log):
            self._count("fail_update_log")
            return True
        return False

    def fail_update_task(self) -> bool:
        if self._draw(self.plan.fail_update_task):
            self._count("fail_update_task")
            return True
        return False
