"""Per-connection state on disk: the unresolved request key, and the running tasks.

Forgejo 15 returns every task it recorded under a request key when the same key
comes again, so a key whose answer was lost is worth keeping across a crash: the
next process retries it and gets the tasks back instead of leaving them to the
server's 10-minute zombie timeout. The record is written *before* the FetchTask
that uses a new key goes out, and cleared (with the received task ids recorded)
in the same atomic write after the answer.

The ids of running tasks are kept beside it because a task that was running when
the process died cannot be resumed: the next start reports it failed at once.

Writes are atomic (temp file, fsync, rename, fsync of the directory); the
directory is 0700 and the files 0600. The files are tiny, so the synchronous
writes cost a few milliseconds of the event loop, which is cheaper and simpler
than a thread hop.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

import attrs

from scheduler.atomicfile import ensure_private_dir, write_atomic

log = logging.getLogger(__name__)


@attrs.frozen
class PendingFetch:
    """A FetchTask whose answer has not been seen yet. Retried with exactly these values."""

    key: str
    task_capacity: int
    tasks_version: int

    @classmethod
    def new(cls, task_capacity: int, tasks_version: int) -> PendingFetch:
        return cls(str(uuid.uuid4()), task_capacity, tasks_version)


@attrs.frozen
class ConnectionState:
    pending: PendingFetch | None = None
    running: tuple[int, ...] = ()


class KeyStore:
    """The state file of one connection: ``<state_dir>/connections/<name>.json``."""

    def __init__(self, state_dir: Path, connection: str) -> None:
        self.dir = state_dir / "connections"
        self.path = self.dir / f"{connection}.json"
        self.connection = connection
        self._state = ConnectionState()

    @property
    def state(self) -> ConnectionState:
        return self._state

    def load(self) -> ConnectionState:
        """Read the file; a missing file is an empty state, a corrupt one is set aside."""
        ensure_private_dir(self.dir)
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._state = ConnectionState()
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
        return self._state

    def set_pending(self, pending: PendingFetch) -> None:
        self._write(attrs.evolve(self._state, pending=pending))

    def resolve(self, received: tuple[int, ...]) -> None:
        """The pending fetch was answered: forget its key, remember the tasks it brought."""
        running = self._state.running + tuple(t for t in received if t not in self._state.running)
        self._write(ConnectionState(pending=None, running=running))

    def clear_pending(self) -> None:
        self._write(attrs.evolve(self._state, pending=None))

    def task_done(self, task_id: int) -> None:
        running = tuple(t for t in self._state.running if t != task_id)
        self._write(attrs.evolve(self._state, running=running))

    def _write(self, state: ConnectionState) -> None:
        if state == self._state and self.path.exists():
            return
        ensure_private_dir(self.dir)
        write_atomic(self.path, json.dumps(_encode(state), sort_keys=True).encode())
        self._state = state


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
