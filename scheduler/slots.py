"""The slot ledger and the fair-share rule: pure, synchronous, no I/O, no clock.

One ledger per process. Every slot is in exactly one place::

    capacity = free + Σ reserved[c] + Σ running[c]

and only these moves exist (shared/reference/core-design.md):

* ``grant``    free → reserved[c]     made only here, only to hungry connections;
* ``resolve``  reserved[c] → running[c] for the tasks that arrived, the rest → free;
* ``finish``   running[c] → free      after the task's final report was acknowledged.

An unknown fetch outcome moves nothing: the reservation simply stays where it is
until the connection resolves its request key. That is what keeps the tasks the
server may already have assigned under that key from ever exceeding ``capacity``.

Fair share: weighted max-min over slots *held* (reserved + running). Among hungry
connections the next slot goes to whoever is below ``min_slots``, then to the one
furthest below its water-filling target (the largest ``target - held``: this keeps
every connection within one slot of its fractional share, where picking the
smallest ``(held + 1) / weight`` alone can overshoot a heavy connection by more),
then the smallest ``(held + 1) / weight`` (then the fewest slots held), ties broken by
stride-scheduling ``pass`` so that equal connections alternate and none starves
(an exact tie goes to whoever was granted longest ago). A single grant is capped at the
connection's *entitlement* (its water-filling share if every active connection
wanted slots, rounded up, at least 1): a black-holed server whose fetch hangs can
then hold no more than its own share in doubt, while a connection that is alone
with work still gets every free slot, one fetch after another.

Owed slots. A connection is not hungry while its own fetch is in flight, so a
slot freed at that moment would go to whoever else waits, even when that one is
already at its share and the fetching one below it (with equal task durations
this is the common case, and it cost a weight-2 connection a fifth of its share).
So a connection whose last answer filled its grant (it has more work) still
competes while its fetch is in flight; a slot it wins is *owed* to it, held for
it, and becomes part of its next grant. An owed slot is idle for at most one
fetch round trip, and is given back at once if that fetch ends empty-handed,
unresolved or refused, so a black-holed server never holds more than its
reservation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

from scheduler.config.values import Share
from scheduler.errors import LedgerError

#: Weight 1, nothing guaranteed, capped only by the capacity.
EQUAL_SHARE: Final = Share()


@attrs.define
class ConnectionSlots:
    """One connection's view in the ledger."""

    name: str
    weight: float
    min_slots: int
    max_slots: int
    running: int = 0
    reserved: int = 0
    owed: int = 0  # earmarked while its fetch is in flight; see SlotLedger.grant
    hungry: bool = False
    inflight: bool = False  # granted, fetch not answered yet
    saturated: bool = False  # its last answer filled its whole grant: it has more work
    active: bool = True
    pass_: float = 0.0
    last_grant: int = 0  # sequence number of its last grant: older wins a tie

    @property
    def held(self) -> int:
        return self.running + self.reserved + self.owed


@attrs.frozen
class Grant:
    connection: str
    slots: int


@attrs.frozen
class SlotStatistics:
    """One connection's slots at one moment (see :meth:`SlotLedger.statistics`)."""

    held: int  # running + reserved + owed
    reserved: int
    owed: int
    running: int
    hungry: bool  # waiting for a grant now
    active: bool  # counted in the entitlement (not down)
    fair_share: float  # its water-filling target now (0 when it neither wants nor holds)


@attrs.frozen
class LedgerStatistics:
    """The whole ledger at one moment: a value, safe to keep and compare.

    As trio's ``CapacityLimiter.statistics()``: read by /healthz, the metrics, the
    demo and the tests instead of asking the ledger one number at a time.
    """

    capacity: int
    free: int
    connections: Mapping[str, SlotStatistics]
    jain_index: float  # over demanding connections, held / fair share

    @property
    def in_use(self) -> int:
        return self.capacity - self.free


@attrs.frozen
class Resolution:
    """What happened to a reservation when its fetch was answered."""

    accepted: int  # tasks that now hold a running slot
    rejected: int  # tasks that found no slot at all: the caller must report them failed
    released: int  # reserved slots returned to the free pool


def water_fill(
    capacity: float, conns: Iterable[ConnectionSlots], *, demand: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Weighted max-min shares of ``capacity`` with per-connection [min, max] bounds.

    ``demand`` caps a connection below its ``max_slots`` (unknown demand = max).
    Finds the level λ with Σ clamp(λ·wᵢ, minᵢ, maxᵢ) = capacity exactly: the sum is
    piecewise linear in λ with breakpoints at minᵢ/wᵢ and maxᵢ/wᵢ, so it is the
    segment between two breakpoints, solved linearly. This runs on every grant.
    """
    items = list(conns)
    if not items:
        return {}
    dem = demand or {}
    lo = {c.name: float(min(c.min_slots, dem.get(c.name, c.max_slots))) for c in items}
    hi = {c.name: float(min(c.max_slots, dem.get(c.name, c.max_slots))) for c in items}

    def total(level: float) -> float:
        return sum(min(max(level * c.weight, lo[c.name]), hi[c.name]) for c in items)

    if sum(hi.values()) <= capacity:
        return dict(hi)
    points = sorted({0.0} | {lo[c.name] / c.weight for c in items}
                    | {hi[c.name] / c.weight for c in items})
    level = points[-1]
    for left, right in itertools.pairwise(points):
        at_right = total(right)
        if at_right >= capacity:
            at_left = total(left)
            slope = (at_right - at_left) / (right - left)
            level = left + (capacity - at_left) / slope if slope > 0 else left
            break
    return {c.name: min(max(level * c.weight, lo[c.name]), hi[c.name]) for c in items}


def jain_index(values: Iterable[float]) -> float:
    """Jain's fairness index (Σx)² / (n·Σx²): 1 is perfectly fair, 1/n is one takes all."""
    xs = list(values)
    sq = sum(x * x for x in xs)
    if not xs or sq == 0:
        return 1.0
    return sum(xs) ** 2 / (len(xs) * sq)


class SlotLedger:
    """The process-wide ledger of runner slots, and the fair-share grant rule."""

    def __repr__(self) -> str:
        held = ", ".join(f"{c.name}={c.held}" for c in self._conns.values())
        return f"<SlotLedger capacity {self.capacity} free {self.free} held: {held or '-'}>"

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise LedgerError("capacity must be at least 1")
        self.capacity = capacity
        self._conns: dict[str, ConnectionSlots] = {}
        self._grant_seq = 0

    # --- membership and configuration -----------------------------------------------

    def add(self, name: str, share: Share = EQUAL_SHARE) -> None:
        if name in self._conns:
            raise LedgerError(f"connection {name!r} already in the ledger")
        self._conns[name] = ConnectionSlots(
            name, share.weight, share.min_slots, share.max_slots or self.capacity
        )

    def configure(self, name: str, share: Share) -> None:
        """Change a connection's share; takes effect from the next grant (no pre-emption)."""
        c = self._get(name)
        c.weight, c.min_slots = share.weight, share.min_slots
        c.max_slots = share.max_slots or self.capacity

    def set_capacity(self, capacity: int) -> None:
        """A smaller capacity never takes a slot back: grants stop until enough have freed."""
        if capacity < 1:
            raise LedgerError("capacity must be at least 1")
        self.capacity = capacity

    def remove(self, name: str) -> None:
        c = self._get(name)
        if c.held:
            raise LedgerError(f"connection {name!r} still holds {c.held} slots")
        del self._conns[name]

    def set_active(self, name: str, active: bool) -> None:
        """An inactive (down) connection is left out of the entitlement computation."""
        c = self._get(name)
        c.active = active
        if not active:
            c.hungry = False
            c.owed = 0

    # --- views ----------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self._conns)

    @property
    def free(self) -> int:
        return self.capacity - sum(c.held for c in self._conns.values())

    def view(self, name: str) -> ConnectionSlots:
        """A copy: the caller cannot move slots behind the ledger's back."""
        return attrs.evolve(self._get(name))

    def held(self, name: str) -> int:
        return self._get(name).held

    def reserved(self, name: str) -> int:
        return self._get(name).reserved

    def owed(self, name: str) -> int:
        return self._get(name).owed

    def running(self, name: str) -> int:
        return self._get(name).running

    def is_hungry(self, name: str) -> bool:
        return self._get(name).hungry

    def demanding(self) -> list[ConnectionSlots]:
        """Connections that want or hold slots: the ones a fair share is owed to."""
        return [c for c in self._conns.values() if c.active and (c.hungry or c.held)]

    def fair_shares(self) -> dict[str, float]:
        """The water-filling target over demanding connections (0 for the others)."""
        shares = dict.fromkeys(self._conns, 0.0)
        shares.update(water_fill(self.capacity, self.demanding()))
        return shares

    def jain_index(self) -> float:
        return self._jain_index(self.fair_shares())

    def _jain_index(self, shares: Mapping[str, float]) -> float:
        return jain_index(
            c.held / shares[c.name] for c in self.demanding() if shares[c.name] > 0
        )

    def statistics(self) -> LedgerStatistics:
        """A frozen snapshot of every connection's slots, its fair share and the Jain index."""
        shares = self.fair_shares()
        return LedgerStatistics(
            capacity=self.capacity,
            free=self.free,
            connections={
                c.name: SlotStatistics(
                    held=c.held, reserved=c.reserved, owed=c.owed, running=c.running,
                    hungry=c.hungry, active=c.active, fair_share=shares[c.name],
                )
                for c in self._conns.values()
            },
            jain_index=self._jain_index(shares),
        )

    def entitlement(self, name: str) -> int:
        """The most one grant may give ``name``: its share if every active connection wanted."""
        return self._entitlements().get(name, 1)

    def _targets(self) -> dict[str, float]:
        """Water-filling over everyone who wants or holds slots (or is coming back for more)."""
        wanting = [
            c for c in self._conns.values()
            if c.active and (c.hungry or c.held or (c.inflight and c.saturated))
        ]
        return water_fill(self.capacity, wanting)

    def _entitlements(self) -> dict[str, int]:
        active = [c for c in self._conns.values() if c.active]
        shares = water_fill(self.capacity, active)
        return {n: max(1, math.ceil(s - 1e-9)) for n, s in shares.items()}

    # --- moves ----------------------------------------------------------------------

    def restore(self, name: str, slots: int) -> int:
        """Reserve for a request key persisted before a restart, before any grant.

        Reserves what is free up to ``slots``; if the capacity shrank, the retry still
        asks the old ``taskCapacity`` and any surplus task is handled by ``resolve``.
        """
        c = self._get(name)
        if c.held:
            raise LedgerError(f"restore for {name!r} after it already holds slots")
        got = max(0, min(slots, self.free))
        c.reserved += got
        c.inflight = True
        return got

    def adopt(self, name: str, tasks: int) -> int:
        """Count tasks left running by a previous process as running, while they are reported.

        The server still counts them against this runner until their final state
        arrives, so they take free slots like any task; returns how many fit.
        """
        c = self._get(name)
        got = max(0, min(tasks, self.free))
        c.running += got
        return got

    def want(self, name: str) -> None:
        """``name`` is ready to fetch and waits for slots (owed ones are kept for it)."""
        c = self._get(name)
        if c.hungry:
            return
        others = [x.pass_ for x in self._conns.values() if x.hungry and x is not c]
        if others:
            # Idle time is not banked: a newly hungry connection starts level with the rest.
            c.pass_ = max(c.pass_, min(others))
        c.hungry = True

    def withdraw(self, name: str) -> None:
        c = self._get(name)
        c.hungry = False
        c.owed = 0

    def forfeit(self, name: str) -> int:
        """The fetch of ``name`` has an unknown outcome: slots owed to it go back."""
        c = self._get(name)
        released, c.owed = c.owed, 0
        c.saturated = False
        return released

    def grant(self) -> list[Grant]:
        """Hand every free slot that someone can use to hungry connections.

        Work-conserving: afterwards either no slot is free or no hungry connection
        below its ``max_slots`` is left waiting. Each granted connection stops being
        hungry; it fetches with ``taskCapacity`` = its grant.
        """
        free = self.free
        given: dict[str, int] = {}
        for c in self._conns.values():
            if c.hungry and c.owed:
                # What was owed to it becomes part of this grant.
                given[c.name], c.owed = c.owed, 0
        caps = self._entitlements() if free > 0 else {}
        target = self._targets() if free > 0 else {}
        while free > 0:
            best: ConnectionSlots | None = None
            best_key: tuple[int, float, float, int, float, int, str] | None = None
            for c in self._conns.values():
                returning = c.inflight and c.saturated
                if not ((c.hungry or returning) and c.active):
                    continue
                g = given.get(c.name, 0)
                if c.held + g >= c.max_slots:
                    continue
                if returning:
                    if c.held >= caps.get(c.name, 1):  # owed only up to its share
                        continue
                elif g >= max(1, caps.get(c.name, 1) - c.held):
                    continue
                key = (
                    0 if c.held + g < c.min_slots else 1,
                    round(c.held + g - target.get(c.name, 0.0), 9),  # largest deficit first
                    (c.held + g + 1) / c.weight,
                    c.held + g,
                    c.pass_,
                    c.last_grant,
                    c.name,
                )
                if best_key is None or key < best_key:
                    best, best_key = c, key
            if best is None:
                break
            if best.hungry:
                given[best.name] = given.get(best.name, 0) + 1
            else:
                best.owed += 1
            best.pass_ += 1.0 / best.weight
            free -= 1
        grants = []
        for name, k in given.items():
            c = self._conns[name]
            self._grant_seq += 1
            c.last_grant = self._grant_seq
            c.reserved += k
            c.hungry = False
            c.inflight = True
            grants.append(Grant(name, k))
        return grants

    def resolve(self, name: str, tasks: int) -> Resolution:
        """A fetch of ``name`` was answered with ``tasks`` tasks: settle its reservation.

        Tasks fill the reservation first, then any free slot (capacity is the hard
        limit, ``max_slots`` is a preference: running a task beats failing it);
        what fits nowhere is ``rejected`` and must be reported failed by the caller.
        """
        if tasks < 0:
            raise LedgerError("negative task count")
        c = self._get(name)
        asked = c.reserved
        c.inflight = False
        c.saturated = tasks > 0 and tasks >= asked
        if not c.saturated:
            c.owed = 0  # no more work there: what was earmarked goes to others
        accepted = min(tasks, c.reserved)
        c.reserved -= accepted
        c.running += accepted
        released = c.reserved
        c.reserved = 0
        extra = tasks - accepted
        from_owed = min(extra, c.owed)  # slots held for it anyway
        c.owed -= from_owed
        c.running += from_owed
        extra -= from_owed
        take = min(extra, max(0, self.free))
        c.running += take
        return Resolution(
            accepted=accepted + from_owed + take, rejected=extra - take, released=released
        )

    def release(self, name: str) -> int:
        """A definite refusal (or a cancelled wait): all of ``name``'s reservation goes back."""
        c = self._get(name)
        released, c.reserved = c.reserved + c.owed, 0
        c.owed = 0
        c.inflight = c.saturated = False
        return released

    def finish(self, name: str) -> None:
        """A task of ``name`` is over and the server knows it: its slot is free again."""
        c = self._get(name)
        if c.running < 1:
            raise LedgerError(f"finish for {name!r} with no running task")
        c.running -= 1

    def _get(self, name: str) -> ConnectionSlots:
        try:
            return self._conns[name]
        except KeyError:
            raise LedgerError(f"unknown connection {name!r}") from None
