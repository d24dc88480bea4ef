"""Per-connection state on disk: the request key, and the running tasks.

Forgejo 15 returns every task it recorded under a request key when the same key
comes again, so a key whose answer was lost is worth keeping across a crash: the
next process retries it and gets the tasks back instead of leaving them to the
server's 10-minute zombie timeout. The ids of running tasks are kept beside it
because a task that was running when the process died cannot be resumed: the next
start reports it failed at once.

The rules (shared/reference/core-design.md, "Request keys on disk"), and how few
writes they need:

* A key is on disk **before** its FetchTask goes out, with a ``task_capacity`` at
  least the one sent (a restart reserves that many slots for its retry).
* An answer with tasks records their ids and forgets the key in **one** atomic
  write before any of them runs. That same write puts the *next* key on disk
  (written ahead, with the capacity just asked), so the next FetchTask usually
  needs no write of its own: one write per fetch cycle.
* An empty (or refused) answer needs no write at all: the server recorded nothing
  under the key, and Forgejo treats a key that recorded nothing as a fresh request
  (its parameters are ignored only on a hit), so the same key, still on disk, is
  simply used again. forgejo-runner rotates it; reusing it is equivalent and spares
  the fsync of every idle poll.
* A grant larger than the capacity on disk rewrites the record first (rare: a
  connection granted more slots than on its last fetch).

So the file always holds the key that may be in flight. On a clean stop the
key written ahead is removed (:meth:`KeyStore.discard_next`), so only a crash
leaves one; the next start retries it like any unresolved key (if it was never
sent, the server treats it as a fresh request: tests/test_crash.py).

Writes are atomic (temp file, fsync, rename, fsync of the directory); the
directory is 0700 and the files 0600. They run in a worker thread
(``trio.to_thread.run_sync``, trio's way to do blocking file I/O) so the event loop
never waits for the disk: issue 14 measured ~30 ms per idle poll for the two
writes the loop then made inline, during which no other connection or task could
run. Each syscall in the thread is a GIL hand-off with the busy event loop, so a
write does as few as it can (the directory is made private once, not per write).
The writes of one store are serialised by a lock and shielded from cancellation,
because a half-done record change (tasks received but not recorded) must not be
abandoned by a shutdown.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import trio

from scheduler.atomicfile import ensure_private_dir, write_atomic

log = logging.getLogger(__name__)

#: How a store runs its blocking file write (a function of no arguments).
DiskWrite = Callable[[Callable[[], None]], Awaitable[None]]


async def in_worker_thread(write: Callable[[], None]) -> None:
    """The default: the write runs in trio's worker thread, the event loop goes on."""
    await trio.to_thread.run_sync(write)


async def on_the_event_loop(write: Callable[[], None]) -> None:
    """For runs on virtual time (trio's MockClock: tests, bench figures 1-5).

    A MockClock cannot see a worker thread: with autojump it would jump to the next
    deadline while the write runs, so a write would take arbitrary virtual time and
    runs would stop being reproducible. Inline, the write takes no virtual time,
    which is what its few milliseconds are next to the seconds being simulated.
    """
    write()


@attrs.frozen
class PendingFetch:
    """A FetchTask whose answer has not been seen yet. Retried with exactly these values."""

    key: str
    task_capacity: int
    tasks_version: int

    @classmethod
    def new(cls, task_capacity: int, tasks_version: int) -> PendingFetch:
        return cls(str(uuid.uuid4()), task_capacity, tasks_version)


class _Keep:
    """``disk=_KEEP``: the key on disk stays as it is."""


_KEEP = _Keep()


@attrs.frozen
class ConnectionState:
    pending: PendingFetch | None = None
    running: tuple[int, ...] = ()


class KeyStore:
    """The state file of one connection: ``<state_dir>/connections/<name>.json``."""

    def __init__(
        self, state_dir: Path, connection: str, *, disk_write: DiskWrite = in_worker_thread
    ) -> None:
        self.disk_write = disk_write
        self.dir = state_dir / "connections"
        self.path = self.dir / f"{connection}.json"
        self.connection = connection
        self._state = ConnectionState()
        self._next: PendingFetch | None = None
        # What the file says (the key that may be in flight, the running tasks).
        self._disk: PendingFetch | None = None
        self._disk_running: tuple[int, ...] = ()
        self._written = False  # the file exists with that content
        self._lock = trio.Lock()
        self._dir_ready = False  # ensure_private_dir done for self.dir
        self.writes = 0  # atomic writes done (each two fsyncs), for tests and the bench

    @property
    def state(self) -> ConnectionState:
        return self._state

    def load(self) -> ConnectionState:
        """Read the file; a missing file is an empty state, a corrupt one is set aside."""
        ensure_private_dir(self.dir)
        self._next = None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._state = ConnectionState()
            self._disk, self._disk_running, self._written = None, (), False
            return self._state
        try:
            self._state = _decode(json.loads(raw))
        except (ValueError, TypeError, KeyError) as exc:
            aside = self.path.with_suffix(f".corrupt-{uuid.uuid4().hex[:8]}")
            os.replace(self.path, aside)
            log.error(
                "connection %s: state file %s is unreadable (%s); moved to %s and starting fresh",
                self.connection, self.path, exc, aside,
            )
            self._state = ConnectionState()
        self._disk, self._disk_running = self._state.pending, self._state.running
        self._written = self.path.exists()
        return self._state

    @property
    def next(self) -> PendingFetch | None:
        """The key written ahead for the next FetchTask (not sent yet), if any."""
        return self._next

    async def set_pending(self, pending: PendingFetch) -> None:
        """Put ``pending`` on disk as the key in flight, whatever was there."""
        await self._write(lambda s: attrs.evolve(s, pending=pending), disk=pending)
        self._next = None

    async def begin(self, task_capacity: int, tasks_version: int) -> PendingFetch:
        """The key for a FetchTask asking ``task_capacity``, on disk before it goes out.

        The key written ahead goes out without a write when the record on disk covers
        ``task_capacity``; otherwise the record is (re)written first.
        """
        ahead = self._next
        key = ahead.key if ahead is not None else str(uuid.uuid4())
        pending = PendingFetch(key, task_capacity, tasks_version)
        disk = self._disk
        if ahead is not None and disk is not None and disk.key == key and (
                disk.task_capacity >= task_capacity):
            self._state = attrs.evolve(self._state, pending=pending)
            self._next = None
        else:
            await self.set_pending(pending)
        return pending

    async def resolve(self, received: tuple[int, ...], *, write_ahead: bool = False) -> None:
        """The pending fetch was answered: forget its key, remember the tasks it brought.

        With ``write_ahead`` the next key goes on disk in the same write (with the
        answered key's capacity), and an empty answer writes nothing: its key, which
        recorded nothing on the server, stays on disk as the next one.
        """
        pending = self._state.pending

        def answered(state: ConnectionState) -> ConnectionState:
            new = tuple(t for t in received if t not in state.running)
            return ConnectionState(pending=None, running=state.running + new)

        if write_ahead and not received and pending is not None:
            self._state = answered(self._state)
            self._next = pending
            return
        ahead = (PendingFetch.new(pending.task_capacity, 0)
                 if write_ahead and pending is not None else None)
        await self._write(answered, disk=ahead)
        self._next = ahead

    def release(self) -> None:
        """The server refused the pending fetch (it did nothing): the key is free again.

        No write: like an empty answer, a refused key recorded nothing and stays on
        disk as the next key.
        """
        pending = self._state.pending
        self._state = attrs.evolve(self._state, pending=None)
        if pending is not None and self._disk is not None and self._disk.key == pending.key:
            self._next = pending

    async def clear_pending(self) -> None:
        """Forget the pending key and the one written ahead, on disk too."""
        await self._write(lambda s: attrs.evolve(s, pending=None), disk=None)
        self._next = None

    async def discard_next(self) -> None:
        """A clean stop: remove the key written ahead, which was never sent."""
        if self._state.pending is None and self._disk is not None:
            await self.clear_pending()

    async def task_done(self, task_id: int) -> None:
        """Forget a finished task; on disk when this returns.

        Removed in memory at once, so tasks that finish while a write is under way
        go to disk together in the next one (one write, not one each).
        """
        self._state = attrs.evolve(
            self._state, running=tuple(t for t in self._state.running if t != task_id))
        await self._write(lambda s: s, disk=_KEEP)

    async def _write(
        self,
        change: Callable[[ConnectionState], ConnectionState],
        *,
        disk: PendingFetch | _Keep | None,
    ) -> None:
        """Make the file hold the running tasks after ``change`` and the key ``disk``.

        ``change`` is applied under the lock to the state of that moment, and again
        to the state after the write: the loop may have moved its key in memory
        meanwhile (a task's coroutine and the loop write to the same store).
        """
        with trio.CancelScope(shield=True):
            async with self._lock:
                running = change(self._state).running
                key = self._disk if isinstance(disk, _Keep) else disk
                if (running, key) != (self._disk_running, self._disk) or not self._written:
                    data = json.dumps(_encode(ConnectionState(key, running)),
                                      sort_keys=True).encode()
                    await self.disk_write(functools.partial(self._write_file, data))
                    self._disk, self._disk_running, self._written = key, running, True
                    self.writes += 1
                self._state = change(self._state)

    def _write_file(self, data: bytes) -> None:
        # The directory is made private once (three syscalls fewer per write); if it
        # disappears later, it is made again.
        if not self._dir_ready:
            ensure_private_dir(self.dir)
            self._dir_ready = True
        try:
            write_atomic(self.path, data)
        except FileNotFoundError:
            ensure_private_dir(self.dir)
            write_atomic(self.path, data)


def _encode(state: ConnectionState) -> dict[str, object]:
    out: dict[str, object] = {"version": 1, "running": list(state.running)}
    if state.pending is not None:
        out["pending"] = {
            "key": state.pending.key,
            "task_capacity": state.pending.task_capacity,
            "tasks_version": state.pending.tasks_version,
        }
    return out


def _decode(data: object) -> ConnectionState:
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ValueError("not a version 1 state record")
    pending = None
    p = data.get("pending")
    if p is not None:
        if not isinstance(p, dict):
            raise TypeError("pending is not an object")
        key, cap, ver = p["key"], p["task_capacity"], p["tasks_version"]
        if not (isinstance(key, str) and key and isinstance(cap, int) and cap >= 1):
            raise ValueError("pending record has a bad key or capacity")
        if not isinstance(ver, int) or isinstance(ver, bool):
            raise ValueError("pending record has a bad tasks_version")
        pending = PendingFetch(key, cap, ver)
    running = data.get("running", [])
    if not isinstance(running, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in running
    ):
        raise ValueError("running is not a list of task ids")
    return ConnectionState(pending=pending, running=tuple(running))
