"""Job arrivals: a seeded Poisson process per instance.

Only trio's clock is used (``trio.sleep``/``trio.current_time``), so a test running under
``MockClock`` can push hours of arrivals through in milliseconds, and two runs with the
same seed queue the same jobs at the same (virtual) times.
"""

from __future__ import annotations

import random

import attrs
import trio

from scheduler.sim.instance import SimInstance


@attrs.define
class Workload:
    """Adds jobs to ``instance`` at exponential gaps (mean ``1/rate``) until stopped.

    Durations are uniform in ``duration_range``; ``max_jobs`` bounds the total.
    """

    instance: SimInstance
    rate: float
    duration_range: tuple[float, float] = (0.5, 3.0)
    rng: random.Random = attrs.field(factory=random.Random)
    max_jobs: int | None = None
    runs_on: tuple[str, ...] = ("sim",)
    added: int = 0
    _scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    def stop(self) -> None:
        """No more arrivals (idempotent; also works before ``run`` started)."""
        self._scope.cancel()

    @property
    def stopped(self) -> bool:
        return self._scope.cancel_called

    async def run(self) -> None:
        if self.rate <= 0:
            return
        low, high = self.duration_range
        with self._scope:
            while self.max_jobs is None or self.added < self.max_jobs:
                await trio.sleep(self.rng.expovariate(self.rate))
                duration = self.rng.uniform(low, high)
                self.instance.add_job(runs_on=self.runs_on, duration=round(duration, 3))
                self.added += 1
