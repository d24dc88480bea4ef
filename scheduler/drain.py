"""What a shutdown still waits for, and what it came to.

The operator of a stopping service needs two answers: *why is it not gone yet*
(:func:`waiting_lines`, logged every :data:`PROGRESS_EVERY` seconds, one line per
connection that still holds the stop up) and *did anything get lost*
(:class:`StopReport`, the last line and the process's exit status).

A stop is clean when every final report that ended during it was acknowledged by its
server and no request key was left unresolved. Otherwise ``forgejo-scheduler run``
exits with :data:`EXIT_NOT_ACKNOWLEDGED`: nothing is lost for good (an unresolved key
stays on disk and the next start retries it; Forgejo's zombie cleanup ends a task whose
result it never got), but someone should look (systemd then shows the unit failed).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

import attrs

from scheduler.connection import ConnectionLoop, Phase

#: Seconds between two "still waiting for" lines during a shutdown.
PROGRESS_EVERY = 10.0
#: The exit status of a stop that left a final result unacknowledged or a key unresolved.
EXIT_NOT_ACKNOWLEDGED = 3


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(str(i) for i in sorted(ids))


def waiting_lines(loops: Mapping[str, ConnectionLoop]) -> list[str]:
    """One line per connection that still holds the stop up: its running tasks, its
    final reports not yet acknowledged, its unresolved request key (since when)."""
    out = []
    for name, loop in loops.items():
        parts = []
        reports = loop.reports
        if reports.running:
            parts.append(f"{len(reports.running)} running task(s) ({_ids(reports.running)})")
        if reports.sending:
            parts.append(f"{len(reports.sending)} final report(s) not yet acknowledged "
                         f"({_ids(reports.sending)})")
        stats = loop.statistics()
        if stats.pending is not None and stats.phase is not Phase.STOPPED:
            if stats.unresolved_for is not None:
                since = dt.datetime.now().astimezone() - dt.timedelta(seconds=stats.unresolved_for)
                parts.append(f"its request key, unresolved since {since:%H:%M:%S} "
                             f"({stats.unresolved_for:.0f}s; {stats.attempts} attempt(s))")
            else:
                parts.append("the answer to its FetchTask in flight")
        if parts:
            up = {None: "not yet up", True: "up", False: "down"}[stats.up]
            out.append(f"connection {name} ({up}): waiting for " + ", ".join(parts))
    return out


@attrs.frozen
class StopReport:
    """What a shutdown came to, per connection (task ids; connection names)."""

    acknowledged: Mapping[str, tuple[int, ...]]
    unacknowledged: Mapping[str, tuple[int, ...]]
    unresolved_keys: tuple[str, ...]

    @classmethod
    def of(cls, loops: Mapping[str, ConnectionLoop]) -> StopReport:
        return cls(
            acknowledged={n: tuple(sorted(lp.reports.acknowledged)) for n, lp in loops.items()
                          if lp.reports.acknowledged},
            unacknowledged={n: tuple(sorted(lp.reports.unacknowledged)) for n, lp in loops.items()
                            if lp.reports.unacknowledged},
            unresolved_keys=tuple(n for n, lp in loops.items() if lp.pending is not None),
        )

    @property
    def clean(self) -> bool:
        return not self.unacknowledged and not self.unresolved_keys

    @property
    def exit_status(self) -> int:
        return 0 if self.clean else EXIT_NOT_ACKNOWLEDGED

    def line(self) -> str:
        """The service's last line: exactly what was and was not acknowledged."""
        reported = sum(len(ids) for ids in self.acknowledged.values())
        if self.clean:
            return (f"stopped: every task is finished and reported ({reported} final "
                    f"result(s) acknowledged during the shutdown); no request key left "
                    f"unresolved")
        parts = [f"stopped: {reported} final result(s) acknowledged"]
        if self.unacknowledged:
            count = sum(len(ids) for ids in self.unacknowledged.values())
            by = "; ".join(f"by {name} (task {_ids(ids)})"
                           for name, ids in self.unacknowledged.items())
            parts.append(f"{count} final result(s) NOT acknowledged {by}")
        if self.unresolved_keys:
            parts.append(f"{len(self.unresolved_keys)} request key(s) left unresolved for "
                         f"the next start ({', '.join(self.unresolved_keys)})")
        return "; ".join(parts) + f"; exit status {EXIT_NOT_ACKNOWLEDGED}"
