"""The slot ledger wrapped for trio.

Connections wait here for a grant. There is no lock that spans connections: every
ledger operation is synchronous and never waits on I/O, so a decision is made in
one step of the event loop and whoever was granted is woken. A connection whose
server is slow blocks nobody; only its own reservation waits with it.
"""

from __future__ import annotations

import logging

import attrs
import trio

from scheduler.errors import PoolClosed
from scheduler.metrics import Metrics
from scheduler.slots import LedgerStatistics, Resolution, SlotLedger

log = logging.getLogger(__name__)


@attrs.frozen
class PoolStatistics:
    """The pool at one moment (as trio's ``CapacityLimiter.statistics()``)."""

    closed: bool
    waiting: tuple[str, ...]  # connections blocked in ``acquire``
    peak_in_use: int  # the most slots held at once since the pool was made
    slots: LedgerStatistics


class SlotPool:
    """Where connection loops wait for runner slots; the only caller of the ledger's moves.

    A loop calls :meth:`acquire` and gets k ≥ 1 slots reserved for one FetchTask, then
    tells the pool what the answer did with them (:meth:`resolve`, :meth:`forfeit`,
    :meth:`release`) and when a task is over (:meth:`finish`). After every move the
    pool re-runs the grant rule, wakes whoever was granted and exports the ledger's
    state to ``metrics`` (slot gauges, and each grant's wait): data flows from the
    ledger out, nothing calls back into the service.
    """

    def __init__(self, ledger: SlotLedger, metrics: Metrics | None = None) -> None:
        self.ledger = ledger
        self.closed = False
        self._metrics = metrics
        self._waiters: dict[str, trio.Event] = {}
        self._hungry_since: dict[str, float] = {}
        self._granted: dict[str, int] = {}
        self._closed_names: set[str] = set()
        self._peak_in_use = 0

    def __repr__(self) -> str:
        waiting = ", ".join(self._waiters) or "-"
        state = "closed" if self.closed else "open"
        return (
            f"<SlotPool {state} in use {self.ledger.capacity - self.ledger.free}"
            f"/{self.ledger.capacity} waiting: {waiting}>"
        )

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            closed=self.closed,
            waiting=tuple(self._waiters),
            peak_in_use=self._peak_in_use,
            slots=self.ledger.statistics(),
        )

    async def acquire(self, name: str) -> int:
        """Wait until ``name`` is granted k ≥ 1 slots; returns k (now reserved for it)."""
        if self.closed or name in self._closed_names:
            raise PoolClosed
        if name in self._waiters:
            raise RuntimeError(f"{name} is already waiting for slots")
        event = trio.Event()
        self._waiters[name] = event
        self._hungry_since[name] = trio.current_time()
        self.ledger.want(name)
        self._dispatch()
        try:
            await event.wait()
        except BaseException:
            # Cancelled while waiting: give back a grant that raced in, or stop wanting.
            self._waiters.pop(name, None)
            if name in self._granted:
                self._granted.pop(name)
                self.ledger.release(name)
            else:
                self.ledger.withdraw(name)
            self._dispatch()
            raise
        self._waiters.pop(name, None)
        if name not in self._granted:
            raise PoolClosed
        return self._granted.pop(name)

    def restore(self, name: str, slots: int) -> int:
        """Re-reserve a persisted key's capacity; call before any connection starts."""
        got = self.ledger.restore(name, slots)
        self._changed()
        return got

    def adopt(self, name: str, tasks: int) -> int:
        got = self.ledger.adopt(name, tasks)
        self._changed()
        return got

    def resolve(self, name: str, tasks: int) -> Resolution:
        res = self.ledger.resolve(name, tasks)
        self._dispatch()
        return res

    def release(self, name: str) -> int:
        released = self.ledger.release(name)
        self._dispatch()
        return released

    def forfeit(self, name: str) -> None:
        """An unknown fetch outcome: give back what was owed to ``name`` (not its reservation)."""
        if self.ledger.forfeit(name):
            self._dispatch()

    def finish(self, name: str) -> None:
        self.ledger.finish(name)
        self._dispatch()

    def set_active(self, name: str, active: bool) -> None:
        self.ledger.set_active(name, active)
        self._dispatch()

    def close(self) -> None:
        """Stop granting; every waiter gets :class:`PoolClosed`."""
        self.closed = True
        for name in self.ledger.names:
            self.ledger.withdraw(name)  # also frees slots owed to fetching connections
        for event in list(self._waiters.values()):
            event.set()
        self._changed()

    def close_connection(self, name: str) -> None:
        """No more grants for ``name`` (it is being removed); its waiter gets PoolClosed."""
        self._closed_names.add(name)
        self.ledger.withdraw(name)
        event = self._waiters.get(name)
        if event is not None and name not in self._granted:
            event.set()
        self._dispatch()

    def reopen_connection(self, name: str) -> None:
        self._closed_names.discard(name)

    def dispatch(self) -> None:
        """Re-run the grant rule (after a capacity or share change)."""
        self._dispatch()

    def _dispatch(self) -> None:
        if not self.closed:
            now = trio.current_time()
            for grant in self.ledger.grant():
                self._granted[grant.connection] = grant.slots
                waited = now - self._hungry_since.pop(grant.connection, now)
                if self._metrics is not None:
                    self._metrics.connection(grant.connection).slot_wait.observe(waited)
                event = self._waiters.get(grant.connection)
                if event is None:  # the ledger only grants hungry connections, who all wait
                    log.error("grant for %s with no waiter; releasing", grant.connection)
                    self._granted.pop(grant.connection)
                    self.ledger.release(grant.connection)
                    continue
                event.set()
        self._changed()

    def _changed(self) -> None:
        """After every move: note the peak, export the ledger's state."""
        in_use = self.ledger.capacity - self.ledger.free
        self._peak_in_use = max(self._peak_in_use, in_use)
        if self._metrics is not None:
            self._metrics.export_slots(self.ledger.statistics())
