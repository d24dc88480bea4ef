"""Pieces of the host executor on their own: command files, env files, hashFiles, the action
cache over real git and loopback HTTP, labels, parsing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio

from scheduler.executor.actions import ActionCache, ActionError, parse_remote, read_action
from scheduler.executor.command_files import parse_env_file
from scheduler.executor.hashfiles import HashFilesError, hash_files
from scheduler.executor.host import pick_label
from scheduler.executor.workflow import WorkflowError, parse_workflow
from tests.support.repos import StaticServer, make_repository

# --- command files ---------------------------------------------------------------------


def test_env_file_format() -> None:
    text = "A=1\nB=x=y\r\nC<<EOF\nline 1\n\nline 3\nEOF\n\nD<<X=Y\nv\nX=Y\nE=\n"
    assert parse_env_file(text) == [
        ("A", "1"), ("B", "x=y"), ("C", "line 1\n\nline 3"), ("D", "v"), ("E", ""),
    ]
    # "=" before "<<" makes a plain assignment.
    assert parse_env_file("K=a<<b\n") == [("K", "a<<b")]
    with pytest.raises(ValueError, match="delimiter 'END' not found"):
        parse_env_file("K<<END\nnever closed\n")
    with pytest.raises(ValueError, match="invalid format 'oops'"):
        parse_env_file("oops\n")


# --- hashFiles ----------------------------------------------------------------------------


def digest(*contents: bytes) -> str:
    return hashlib.sha256(b"".join(hashlib.sha256(c).digest() for c in contents)).hexdigest()


def test_hash_files(tmp_path: Path) -> None:
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "a.txt").write_bytes(b"a")
    (tmp_path / "src" / "sub" / "b.txt").write_bytes(b"b")
    (tmp_path / "z.lock").write_bytes(b"z")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "o.txt").write_bytes(b"o")
    (tmp_path / "linked").symlink_to(outside, target_is_directory=True)

    assert hash_files(tmp_path, ["src"]) == digest(b"a", b"b")  # a directory: its files
    assert hash_files(tmp_path, ["src/**/*.txt\n!src/sub/**"]) == digest(b"a")
    assert hash_files(tmp_path, ["!src/sub/**", "src/**"]) == digest(b"a", b"b")  # order
    assert hash_files(tmp_path, ["**/*.lock", "src/a.txt"]) == digest(b"a", b"z")
    assert hash_files(tmp_path, ["*.none"]) == ""
    assert hash_files(tmp_path, [f"{outside}/o.txt"]) == ""  # outside the workspace
    assert hash_files(tmp_path, ["linked/**"]) == ""  # links are not followed...
    assert hash_files(tmp_path, ["--follow-symbolic-links", "linked/**"]) == digest(b"o")
    with pytest.raises(HashFilesError, match="Invalid glob option --nope"):
        hash_files(tmp_path, ["--nope", "x"])


# --- actions ------------------------------------------------------------------------------


def test_parse_remote() -> None:
    ref = parse_remote("actions/checkout@v4")
    assert ref is not None
    assert (ref.owner, ref.repo, ref.path, ref.ref) == ("actions", "checkout", "", "v4")
    assert ref.clone_url("data.forgejo.org") == "https://data.forgejo.org/actions/checkout"
    deep = parse_remote("http://host:3000/o/r/sub/dir@main")
    assert deep is not None
    assert deep.clone_url("https://ignored") == "http://host:3000/o/r"
    assert deep.path == "sub/dir"
    for bad in ("actions/checkout", "checkout@v4", "https://host@v1", "a/b@"):
        assert parse_remote(bad) is None


def test_read_action(tmp_path: Path) -> None:
    (tmp_path / "action.yaml").write_text(
        "name: x\ninputs:\n  a: {default: 1}\n  b: {}\noutputs:\n  o: {value: v}\n"
        "runs:\n  using: Node20\n  main: m.js\n"
    )
    action = read_action(tmp_path, "x")
    assert (action.using, action.main, action.pre_if, action.post_if) == (
        "node20", "m.js", "always()", "always()"
    )
    assert dict(action.inputs) == {"a": "1", "b": None}
    assert dict(action.outputs) == {"o": "v"}
    (tmp_path / "action.yaml").write_text("runs: {using: node99}\n")
    with pytest.raises(ActionError, match=r"runs\.using must be one of"):
        read_action(tmp_path, "x")
    (tmp_path / "action.yaml").unlink()
    with pytest.raises(ActionError, match=r"no action\.yml or action\.yaml"):
        read_action(tmp_path, "x")
    (tmp_path / "Dockerfile").write_text("FROM alpine\n")
    assert read_action(tmp_path, "x").using == "docker"


async def test_action_cache_fetches_checks_out_and_reuses(tmp_path: Path) -> None:
    served = tmp_path / "served"
    sha = make_repository(served, "o/tool", {"action.yml": "runs: {using: sh, main: x}\n",
                                             "bin/run.sh": "echo hi\n"}, tags=["v1", "v2"])
    server = StaticServer(served)
    cache = ActionCache(tmp_path / "cache")
    rows: list[str] = []
    async with trio.open_nursery() as nursery:
        base = await nursery.start(server.serve)
        url = f"{base}/o/tool"
        first, second, third = tmp_path / "t1", tmp_path / "t2", tmp_path / "t3"
        async with trio.open_nursery() as both:  # two tasks at once: one fetch at a time
            both.start_soon(cache.checkout, url, "v1", first, rows.append)
            both.start_soon(cache.checkout, url, "main", second, rows.append)
        assert (first / "bin" / "run.sh").read_text() == "echo hi\n"
        assert (first / "bin" / "run.sh").stat().st_mode & 0o111
        assert (second / "action.yml").is_file()
        refs_fetched = server.hits["/o/tool/info/refs"]
        assert await cache.checkout(url, sha, third, rows.append) == sha
        assert server.hits["/o/tool/info/refs"] == refs_fetched  # a cached full SHA: no fetch
        with pytest.raises(ActionError, match="shortened version of a commit SHA"):
            await cache.checkout(url, sha[:7], tmp_path / "t4", rows.append)
        with pytest.raises(ActionError, match="has no branch, tag or commit 'v9'"):
            await cache.checkout(url, "v9", tmp_path / "t5", rows.append)
        with pytest.raises(ActionError, match="cannot fetch"):
            await cache.checkout(f"{base}/o/missing", "v1", tmp_path / "t6", rows.append)
        nursery.cancel_scope.cancel()
    assert rows.count(f"☁ git clone '{url}' # ref=v1") == 1
    # The server is gone: a cached tag is used, with a warning.
    assert await cache.checkout(url, "v2", tmp_path / "t7", rows.append) == sha
    assert rows[-1].startswith(f"warning: cannot fetch {url}")


# --- labels and parsing -------------------------------------------------------------------


def test_pick_label() -> None:
    labels = ["debian:host", "ubuntu:docker://node:20", "plain", "box:lxc"]
    assert pick_label(["debian"], labels) == ("debian:host", "host")
    assert pick_label(["nope", "ubuntu", "debian"], labels) == ("ubuntu:docker://node:20",
                                                                "docker")
    assert pick_label(["plain"], labels) == ("plain", "docker")
    assert pick_label(["box"], labels) == ("box:lxc", "lxc")
    assert pick_label(["other"], labels) is None


def test_parse_job_details() -> None:
    wf = parse_workflow(
        b"name: w\ntrue:\n  workflow_dispatch:\n    inputs:\n      x: {type: boolean}\n"
        b"jobs:\n  j:\n    runs-on: [self-hosted, debian]\n    needs: build\n"
        b"    strategy:\n      fail-fast: false\n      max-parallel: 2\n"
        b"      matrix: {os: [linux], cfg: [{a: 1}], include: [{x: 1}]}\n"
        b"    outputs: {o: '${{ steps.a.outputs.b }}'}\n"
        b"    steps:\n      - run: echo\n        name: ${{ matrix.os }}\n"
    )
    job = wf.job
    assert job.runs_on == ("self-hosted", "debian")
    assert job.needs == ("build",)
    assert dict(job.strategy.matrix) == {"os": "linux", "cfg": {"a": 1}}
    assert (job.strategy.fail_fast, job.strategy.max_parallel) == (False, 2)
    assert dict(job.outputs) == {"o": "${{ steps.a.outputs.b }}"}
    assert job.steps[0].title == "${{ matrix.os }}"
    assert dict(wf.dispatch_inputs) == {"x": {"type": "boolean"}}
    labels = parse_workflow(b"jobs:\n  j:\n    runs-on: {group: g, labels: [a, b]}\n")
    assert labels.job.runs_on == ("a", "b")
    with pytest.raises(WorkflowError, match="has 2 values"):
        parse_workflow(b"jobs:\n  j:\n    strategy: {matrix: {os: [a, b]}}\n")
