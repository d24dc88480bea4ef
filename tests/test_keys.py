"""Persisted request keys: atomic, private, and robust to a corrupt file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from scheduler.keys import ConnectionState, KeyStore, PendingFetch


def test_pending_key_survives_a_new_store(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "state", "alpha")
    store.load()
    pending = PendingFetch.new(3, 17)
    store.set_pending(pending)
    again = KeyStore(tmp_path / "state", "alpha").load()
    assert again.pending == pending and again.running == ()


def test_resolve_forgets_key_and_records_tasks_in_one_write(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, "a")
    store.load()
    store.set_pending(PendingFetch("k1", 2, 0))
    store.resolve((11, 12))
    assert KeyStore(tmp_path, "a").load() == ConnectionState(pending=None, running=(11, 12))
    store.task_done(11)
    assert KeyStore(tmp_path, "a").load().running == (12,)


def test_files_are_private(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    store = KeyStore(state_dir, "a")
    store.load()
    store.set_pending(PendingFetch("k", 1, 0))
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
