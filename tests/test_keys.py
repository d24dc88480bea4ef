"""Persisted request keys: atomic, private, and robust to a corrupt file."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest
import trio

from scheduler.keys import ConnectionState, KeyStore, PendingFetch, on_the_event_loop


async def test_pending_key_survives_a_new_store(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "state", "alpha")
    store.load()
    pending = PendingFetch.new(3, 17)
    await store.set_pending(pending)
    again = KeyStore(tmp_path / "state", "alpha").load()
    assert again.pending == pending and again.running == ()


async def test_resolve_forgets_key_and_records_tasks_in_one_write(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, "a")
    store.load()
    await store.set_pending(PendingFetch("k1", 2, 0))
    await store.resolve((11, 12))
    assert KeyStore(tmp_path, "a").load() == ConnectionState(pending=None, running=(11, 12))
    await store.task_done(11)
    assert KeyStore(tmp_path, "a").load().running == (12,)


async def test_files_are_private(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    store = KeyStore(state_dir, "a")
    store.load()
    await store.set_pending(PendingFetch("k", 1, 0))
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    leftovers = [p.name for p in store.dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_corrupt_file_is_set_aside(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, "a")
    store.load()
    store.path.write_text("{not json")
    assert store.load() == ConnectionState()
    assert not store.path.exists()
    assert len(list(store.dir.glob("a.corrupt-*"))) == 1


def test_bad_record_shapes_are_rejected(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, "a")
    store.load()
    bad: object
    for bad in (
        {"version": 2},
        {"version": 1, "pending": {"key": "", "task_capacity": 1, "tasks_version": 0}},
        {"version": 1, "pending": {"key": "k", "task_capacity": 0, "tasks_version": 0}},
        {"version": 1, "running": ["7"]},
        [],
    ):
        store.path.write_text(json.dumps(bad))
        assert store.load() == ConnectionState(), bad


class DiskCounter:
    """Counts the atomic writes and fsyncs of real KeyStore writes (still done for real)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fsyncs = 0
        self.threads: set[int] = set()
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            self.fsyncs += 1
            self.threads.add(threading.get_ident())
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)  # scheduler.atomicfile calls os.fsync


def on_disk(store: KeyStore) -> ConnectionState:
    return KeyStore(store.dir.parent, store.connection).load()


async def test_one_write_per_fetch_cycle_and_none_for_an_empty_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = DiskCounter(monkeypatch)
    store = KeyStore(tmp_path, "a")
    store.load()

    first = await store.begin(2, 0)  # nothing written ahead yet: written now
    assert (store.writes, disk.fsyncs) == (1, 2)  # file + directory
    assert on_disk(store).pending == first

    # Empty answers: no write; the key recorded nothing and goes out again.
    for version in (5, 6, 7):
        await store.resolve((), write_ahead=True)
        again = await store.begin(2, version)
        assert again.key == first.key and again.tasks_version == version
        assert on_disk(store).pending == first  # on disk, covering what is sent
    assert store.writes == 1

    # A smaller grant is covered by the record too.
    await store.resolve((), write_ahead=True)
    assert (await store.begin(1, 0)).key == first.key
    assert store.writes == 1

    # An answer with tasks: one write records them, forgets the key and writes the next.
    await store.resolve((41, 42), write_ahead=True)
    assert store.writes == 2 and disk.fsyncs == 4
    state = on_disk(store)
    assert state.running == (41, 42)
    assert state.pending is not None and state.pending.key != first.key
    assert state.pending.task_capacity == 1 and store.next == state.pending

    # ... so the next FetchTask needs no write of its own.
    nxt = await store.begin(1, 0)
    assert nxt.key == state.pending.key and store.writes == 2

    # A grant larger than the record: rewritten first (same key, larger capacity).
    await store.resolve((), write_ahead=True)
    bigger = await store.begin(3, 0)
    assert bigger.key == nxt.key and store.writes == 3
    assert on_disk(store).pending == bigger

    # Refused: nothing written, the key stays as the next one.
    store.release()
    assert store.next == bigger and store.writes == 3

    # A finished task is one write; a clean stop removes the key written ahead.
    await store.task_done(41)
    await store.discard_next()
    assert store.writes == 5
    assert on_disk(store) == ConnectionState(pending=None, running=(42,))


async def test_writes_run_in_a_worker_thread_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = DiskCounter(monkeypatch)
    store = KeyStore(tmp_path, "a")
    store.load()
    await store.begin(1, 0)
    assert disk.fsyncs == 2 and threading.get_ident() not in disk.threads

    inline = KeyStore(tmp_path, "b", disk_write=on_the_event_loop)
    inline.load()
    await inline.begin(1, 0)
    assert threading.get_ident() in disk.threads


async def test_tasks_that_finish_together_are_forgotten_in_one_write(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, "a")  # the worker thread: the others wait meanwhile
    store.load()
    await store.set_pending(PendingFetch("k", 4, 0))
    await store.resolve((1, 2, 3, 4))
    before = store.writes
    async with trio.open_nursery() as nursery:
        for task_id in (1, 2, 3):
            nursery.start_soon(store.task_done, task_id)
    assert on_disk(store).running == (4,)
    assert store.writes - before == 1  # all three removals went out in the first write


async def test_a_state_directory_removed_while_running_is_made_again(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "state", "a")
    store.load()
    await store.set_pending(PendingFetch("k1", 1, 0))
    shutil.rmtree(tmp_path / "state")
    await store.set_pending(PendingFetch("k2", 1, 0))
    assert KeyStore(tmp_path / "state", "a").load().pending == PendingFetch("k2", 1, 0)
    assert stat.S_IMODE(os.stat(store.dir).st_mode) == 0o700
