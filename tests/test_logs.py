"""Logging as an operator meets it: the options, the levels, the two formats, the fields
of a task's lines, the start-up summary.

The options and formats are tested on the real command (a child process against the
simulator, its stderr parsed line by line); what a level lets through, the context
fields across concurrent trio tasks and the ``[logging]`` table are tested in-process.
"""

from __future__ import annotations

import argparse
import contextvars
import datetime as dt
import io
import itertools
import json
import logging
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from scheduler import logcontext
from scheduler.cli import build_parser
from scheduler.config import load_config, render_config
from scheduler.errors import ConfigError
from scheduler.logs import TRACE, setup_logging
from scheduler.sim import Simulator
from tests.support.config import write_config
from tests.support.daemon import CLI, ROOT, Daemon
from tests.support.harness import daemon_world

TEXT_LINE = re.compile(
    r"(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d) (?P<level>[A-Z]+) +"
    r"(?P<logger>[\w.]+): (?P<message>.*)"
)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)


# ---------------------------------------------------------------------------------------
# The options


@pytest.mark.parametrize("argv", [
    ("--log-level", "foo", "run"),
    ("run", "--log-level", "foo"),
    ("sim", "--log-level", "verbose"),
    ("--log-format", "xml", "check-config"),
    ("demo", "--log-format", "xml"),
])
def test_a_bad_value_is_an_argparse_error(argv: tuple[str, ...]) -> None:
    proc = cli(*argv)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    option, value = next((a, b) for a, b in itertools.pairwise(argv)
                         if a.startswith("--log"))
    assert f"error: argument {option}: invalid choice: '{value}'" in proc.stderr
    assert "choose from" in proc.stderr


def test_the_options_are_accepted_before_and_after_every_subcommand(tmp_path: Path) -> None:
    parser = build_parser()
    for sub in ("run", "check-config", "demo", "sim", "register", "import-config"):
        help_text = _subparser(parser, sub).format_help()
        assert "--log-level" in help_text and "--log-format" in help_text, sub
    cases = {
        ("run",): (None, None),
        ("--log-level", "TRACE", "run"): ("trace", None),
        ("run", "--log-level", "Debug", "--log-format", "JSON"): ("debug", "json"),
        ("--log-level", "error", "--log-format", "json", "run"): ("error", "json"),
        ("--log-level", "error", "run", "--log-level", "info"): ("info", None),
    }
    for argv, expected in cases.items():
        args = parser.parse_args(argv)
        assert (args.log_level, args.log_format) == expected, argv
    config = write_config(tmp_path / "config.toml", {
        "a": {"url": "http://127.0.0.1:9", "uuid": "u", "token": "t0ken-t0ken"}}, capacity=1)
    proc = cli("check-config", "--config", str(config), "--log-level", "trace",
               "--log-format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "[logging]" in proc.stdout


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub: argparse.ArgumentParser = action.choices[name]
            return sub
    raise AssertionError(name)


# ---------------------------------------------------------------------------------------
# The real daemon: levels and formats


async def _one_task(sim: Simulator, daemon: Daemon) -> tuple[str, int]:
    """Let the daemon run one job on instance a, stop it; its stderr and the task id."""
    job = sim.instances["a"].add_job(duration=0.3)
    with trio.fail_after(60):
        while (task := sim.instances["a"].task_for_job(job)) is None or task.result is None:
            await trio.sleep(0.05)
    daemon.signal(signal.SIGTERM)
    code = await daemon.wait()
    log = daemon.log.decode()
    assert code == 0, log[-3000:]
    return log, task.id


async def test_text_at_debug_after_the_subcommand_overriding_the_config(tmp_path: Path) -> None:
    """``run --log-level debug --log-format text`` beats ``[logging]`` (error, json):
    our debug lines and httpx's request lines, no httpcore internals; every line has an
    ISO 8601 time with date and offset; a task's lines name its repository and job."""
    async with daemon_world(tmp_path, ["a", "b"], capacity=2, fetch_interval=0.2) as w:
        with w.config.open("a") as fh:
            fh.write('\n[logging]\nlevel = "error"\nformat = "json"\n')
        daemon = await w.start("--log-level", "debug", "--log-format", "text")
        log, _ = await _one_task(w.sim, daemon)
    lines = log.splitlines()
    parsed = [TEXT_LINE.fullmatch(line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed, strict=True) if not m][:3]
    records = [m.groupdict() for m in parsed if m]
    for r in records:
        assert dt.datetime.fromisoformat(r["ts"]).tzinfo is not None
    loggers = {r["logger"] for r in records}
    assert not any(name.startswith(("httpcore", "h11")) for name in loggers), loggers
    requests = [r for r in records if r["logger"] == "httpx"]
    assert requests and all(r["level"] == "DEBUG" for r in requests)
    assert any("FetchTask" in r["message"] for r in requests)
    assert any(r["level"] == "DEBUG" and r["logger"].startswith("scheduler") for r in records)
    task_lines = [r["message"] for r in records if r["logger"] == "scheduler.task.lifecycle"]
    assert any(m.endswith(": started [repository=sim/a job=job]") for m in task_lines)
    assert any(", success, after " in m and m.endswith("[repository=sim/a job=job]")
               for m in task_lines)
    summary = [r["message"] for r in records if "declares labels" in r["message"]]
    assert len(summary) == 2
    for name in ("a", "b"):
        line = next(m for m in summary if m.startswith(f"connection {name}: "))
        assert w.sim.base_url(name) in line
        assert "declares labels sim;" in line
        assert "its jobs run on this host as user " in line and "(host executor, in " in line
        assert "share: weight 1, slots 0..2 of 2; fetch every 200ms" in line
    assert any(m.startswith("forgejo-scheduler ") and "capacity 2, 2 connection(s) (a, b)" in m
               for m in (r["message"] for r in records))


def _json_lines(log: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in log.splitlines()]
    for r in records:
        assert {"ts", "level", "logger", "message"} <= set(r), r
        assert dt.datetime.fromisoformat(r["ts"]).tzinfo is not None
    return records


async def test_json_at_trace_from_the_config(tmp_path: Path) -> None:
    """``[logging] level = "trace", format = "json"``: every line one JSON object; the
    libraries' internals appear; a task's lines (ours and its HTTP requests) carry
    connection, task_id, repository and job; a connection's lines carry connection."""
    async with daemon_world(tmp_path, ["a", "b"], capacity=2, fetch_interval=0.2) as w:
        with w.config.open("a") as fh:
            fh.write('\n[logging]\nlevel = "TRACE"\nformat = "json"\n')
        daemon = await w.start()
        log, task_id = await _one_task(w.sim, daemon)
    records = _json_lines(log)
    assert any(r["logger"].startswith("httpcore") and r["level"] == "debug" for r in records)
    mine = [r for r in records if r.get("task_id") == task_id]
    assert {r["logger"] for r in mine} >= {"scheduler.task.lifecycle", "httpx"}
    for r in mine:
        assert (r["connection"], r["repository"], r["job"]) == ("a", "sim/a", "job"), r
    messages = [r["message"] for r in mine]
    assert f"task {task_id} on a: started" in messages
    fetches = [r for r in records if "FetchTask" in r["message"] and r["logger"] == "httpx"]
    assert fetches and all(r["connection"] in ("a", "b") and "task_id" not in r
                           for r in fetches)
    summary = [r for r in records if "declares labels" in r["message"]]
    assert sorted(r["connection"] for r in summary) == ["a", "b"]


# ---------------------------------------------------------------------------------------
# In-process: what each level lets through, the context across trio tasks


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """setup_logging changes the process's logging: put it back afterwards."""
    root = logging.getLogger()
    names = ("httpx", "httpcore", "h11", "hypercorn")
    saved = (list(root.handlers), root.level,
             {n: (logging.getLogger(n).level, list(logging.getLogger(n).filters))
              for n in names})
    yield
    handlers, level, loggers = saved
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    for n, (lvl, filters) in loggers.items():
        logger = logging.getLogger(n)
        logger.setLevel(lvl)
        logger.filters = filters


def _emit_one_of_each() -> None:
    logging.getLogger("httpcore.http11").debug("send_request_headers.started")
    logging.getLogger("h11").debug("h11 event")
    logging.getLogger("httpx").debug("load_ssl_context verify=True")
    logging.getLogger("httpx").info('HTTP Request: POST http://x/FetchTask "HTTP/1.1 200 OK"')
    logging.getLogger("httpcore.connection").warning("connection trouble")
    logging.getLogger("scheduler.x").debug("our debug line")
    logging.getLogger("scheduler.x").info("our info line")


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(("level", "expected"), [
    ("trace", ["TRACE httpx", "DEBUG httpcore.http11", "DEBUG h11", "DEBUG httpx",
               "WARNING httpcore.connection", "DEBUG scheduler.x", "INFO scheduler.x"]),
    ("debug", ["DEBUG httpx", "WARNING httpcore.connection", "DEBUG scheduler.x",
               "INFO scheduler.x"]),
    ("info", ["WARNING httpcore.connection", "INFO scheduler.x"]),
    ("warning", ["WARNING httpcore.connection"]),
])
def test_what_each_level_shows(level: str, expected: list[str]) -> None:
    out = io.StringIO()
    setup_logging(level, stream=out)
    _emit_one_of_each()
    got = [" ".join(line.split()[1:3]).rstrip(":") for line in out.getvalue().splitlines()]
    assert sorted(got) == sorted(expected)


@pytest.mark.usefixtures("restore_logging")
async def test_context_fields_follow_trio_tasks() -> None:
    """A child inherits what its parent bound before starting it; siblings do not see
    each other's; ``extra=`` wins; the text format names repository and job."""
    out = io.StringIO()
    setup_logging("debug", fmt="json", stream=out, secrets=["s3cret-value"])
    log = logging.getLogger("scheduler.test")

    async def task(task_id: int, repo: str, started: trio.Event) -> None:
        logcontext.bind_task(task_id, {"repository": repo, "job": f"job{task_id}"},
                             connection=None)
        started.set()
        await trio.sleep(0.01)  # both are bound by now: no mixing
        log.info("task %d line", task_id)

    async def connection() -> None:
        logcontext.bind(connection="c1")
        log.info("connection line")
        log.info("explicit", extra={"connection": "other"})
        async with trio.open_nursery() as nursery:
            for i, repo in ((1, "o/one"), (2, "o/s3cret-value")):
                started = trio.Event()
                nursery.start_soon(task, i, repo, started)
                await started.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection)
    log.info("outside")
    records = {r["message"]: r for r in map(json.loads, out.getvalue().splitlines())}
    assert records["connection line"]["connection"] == "c1"
    assert "task_id" not in records["connection line"]
    assert records["explicit"]["connection"] == "other"
    one = records["task 1 line"]
    assert (one["connection"], one["task_id"], one["repository"], one["job"]) == (
        "c1", 1, "o/one", "job1")
    assert records["task 2 line"]["repository"] == "o/***"  # masked there too
    assert records["task 2 line"]["task_id"] == 2
    assert set(records["outside"]) == {"ts", "level", "logger", "message"}


@pytest.mark.usefixtures("restore_logging")
def test_text_format_and_exceptions() -> None:
    contextvars.copy_context().run(_text_format_and_exceptions)  # bindings stay in there


def _text_format_and_exceptions() -> None:
    out = io.StringIO()
    setup_logging("info", stream=out, secrets=["hunter2-token"])
    logcontext.bind_task(7, {"repository": "o/r", "job": "build"}, connection="c")
    try:
        raise RuntimeError("boom with hunter2-token")
    except RuntimeError:
        logging.getLogger("scheduler.t").exception("failed")
    text = out.getvalue()
    first, *rest = text.splitlines()
    m = TEXT_LINE.fullmatch(first)
    assert m and m["message"] == "failed [repository=o/r job=build]"
    assert "RuntimeError: boom with ***" in rest[-1]
    assert "hunter2-token" not in text
    assert logging.getLevelName(TRACE) == "TRACE"
    logcontext.bind_task(8, {}, connection="c")  # a task without them: nothing stale
    logging.getLogger("scheduler.t").warning("plain")
    assert out.getvalue().splitlines()[-1].endswith("scheduler.t: plain")


# ---------------------------------------------------------------------------------------
# [logging] in the config


def _config(tmp_path: Path, table: str) -> Path:
    path = write_config(tmp_path / "config.toml", {
        "a": {"url": "http://127.0.0.1:9", "uuid": "u", "token": "t0ken-t0ken"}}, capacity=1)
    with path.open("a") as fh:
        fh.write("\n[logging]\n" + table)
    return path


def test_logging_table_parsed_rendered_and_checked(tmp_path: Path) -> None:
    default = load_config(_config(tmp_path, ""))
    assert (default.logging.level, default.logging.format) == ("info", "text")
    config = load_config(_config(tmp_path, 'level = "Debug"\nformat = "json"\n'))
    assert (config.logging.level, config.logging.format) == ("debug", "json")
    text = render_config(config)
    assert '[logging]' in text and 'level = "debug"' in text and 'format = "json"' in text
    for table, key, shown in (('level = "loud"\n', "logging.level", '"loud"'),
                              ("level = 10\n", "logging.level", "10"),
                              ('format = "xml"\n', "logging.format", '"xml"'),
                              ('levle = "debug"\n', "logging.levle", "did you mean 'level'")):
        with pytest.raises(ConfigError) as info:
            load_config(_config(tmp_path, table))
        message = str(info.value)
        assert message.startswith(f"{tmp_path / 'config.toml'}: {key}: "), message
        assert shown in message
        if "did you mean" not in shown:
            assert "expected one of " in message


async def test_a_reload_applies_a_changed_logging_table(tmp_path: Path) -> None:
    """SIGHUP with ``[logging] format = "json"`` added: the next lines are JSON; a level
    given on the command line stays in force."""
    async with daemon_world(tmp_path, ["a"], capacity=1, fetch_interval=0.2) as w:
        daemon = await w.start("--log-level", "info")
        with w.config.open("a") as fh:
            fh.write('\n[logging]\nlevel = "error"\nformat = "json"\n')
        daemon.signal(signal.SIGHUP)
        with trio.fail_after(30):
            while b'"message": "' not in daemon.log:
                await trio.sleep(0.05)
        await _one_task(w.sim, daemon)
    lines = daemon.log.decode().splitlines()
    first_json = next(i for i, line in enumerate(lines) if line.startswith("{"))
    assert all(TEXT_LINE.fullmatch(line) for line in lines[:first_json])
    records = _json_lines("\n".join(lines[first_json:]))
    assert any(r["level"] == "info" and "finished, success" in r["message"] for r in records)
