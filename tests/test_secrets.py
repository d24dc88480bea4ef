"""Secrets and tokens: where tokens come from, what is warned about, private state,
loopback metrics, and scans of everything the process wrote for tokens and job secrets.

The scans look for every runner token (from a file, an environment variable and the
config itself), every job secret and every task token the server handed out, in:

* every log record of the process, at TRACE (below DEBUG: the HTTP libraries'
  internals), from every logger (ours, httpx, httpcore, hypercorn), with exception
  texts, with its connection/task fields, formatted as text and as JSON;
* every log row the simulator received (the job printed its secrets: they must arrive
  as ``***``);
* ``/metrics``, ``/healthz`` and ``/readyz``;
* the state directory's files.

One scan runs the service in-process on a MockClock with faults on every path (dropped
answers, 5xx, failing UpdateLog, a revoked token); the other runs the real daemon (a
child process, ``--log-level DEBUG`` in the text format, and ``--log-level trace`` in
the JSON format) with the real host executor, whose job echoes a secret and the task
token from bash.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
from pathlib import Path

import attrs
import httpx
import pytest
import trio
import trio.testing

from scheduler.config import MetricsSettings, load_config, token_file_warning
from scheduler.executor.simulated import SimulatedExecutor
from scheduler.logcontext import ContextFilter
from scheduler.logs import TRACE, JsonFormatter, TextFormatter
from scheduler.service import Service
from scheduler.sim import FaultPlan, InstanceSpec, Simulator
from tests.support.config import Inline, write_config
from tests.support.daemon import CLI, ROOT
from tests.support.harness import running_service
from tests.support.polling import wait_for
from tests.support.sim import running_sim

JOB_SECRET = "hunter2-job-secret-value"
JOB_SECRET_2 = "s3cr3t/with=special+chars"


def scan(text: str, secrets: list[str], where: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret ({secret[:4]}...) leaked into {where}"


def state_files(state: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in state.rglob("*") if p.is_file())


def assert_private(state: Path) -> None:
    """state_dir and state_dir/connections 0700, every state file 0600."""
    for directory in (state, state / "connections"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    files = list((state / "connections").iterdir())
    assert files
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def all_secrets(sim: Simulator, tokens: list[str]) -> list[str]:
    task_tokens = [t.token for inst in sim.instances.values() for t in inst.tasks.values()]
    return [*tokens, JOB_SECRET, JOB_SECRET_2, *task_tokens]


def echo_secrets_workflow() -> str:
    """For the SimulatedExecutor: each ``echo`` line is printed as a row."""
    return (
        "jobs:\n  j:\n    steps:\n"
        f"      - run: echo the secret is {JOB_SECRET}\n"
        f"      - run: echo and {JOB_SECRET_2} too\n"
        "      - run: sleep 2\n"
    )


@attrs.define
class Env:
    """Token sources: a file (0600), an environment variable, the config itself."""

    conns: dict[str, dict[str, object]]
    env_var: str = "SECRETS_TEST_TOKEN_B"


def three_sources(sim: Simulator, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    a, b, c = (sim.instances[n] for n in "abc")
    token_file = tmp / "a.token"
    token_file.write_text(a.runner.token + "\n")
    token_file.chmod(0o600)
    monkeypatch.setenv("SECRETS_TEST_TOKEN_B", b.runner.token)
    conns: dict[str, dict[str, object]] = {
        "a": {"url": sim.base_url("a"), "uuid": a.runner.uuid, "token_file": str(token_file)},
        "b": {"url": sim.base_url("b"), "uuid": b.runner.uuid,
              "token_env": "SECRETS_TEST_TOKEN_B"},
        "c": {"url": sim.base_url("c"), "uuid": c.runner.uuid, "token": Inline(c.runner.token)},
    }
    return Env(conns)


async def test_tokens_from_file_env_and_config_authenticate(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running_sim("a", "b", "c", seed=2) as sim:
        env = three_sources(sim, tmp_path, monkeypatch)
        path = write_config(tmp_path / "config.toml", env.conns, capacity=3)
        config = load_config(path)
        sources = {c.name: c.token_source for c in config.connections}
        assert sources == {"a": f"file:{tmp_path / 'a.token'}",
                           "b": "env:SECRETS_TEST_TOKEN_B", "c": "config"}
        for c in config.connections:
            assert c.token == sim.instances[c.name].runner.token
            assert c.token not in repr(c)
        async with running_service(path, seed=1) as service:
            for name in "abc":
                sim.instances[name].add_job(duration=1)
            await wait_for(lambda: sim.ledger.statistics().finished == 3)
            service.request_stop()


def test_token_file_readable_by_others_is_warned_about(tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text("x")
    for mode, who in ((0o600, None), (0o640, "group"), (0o604, "others"),
                      (0o644, "group and others")):
        token.chmod(mode)
        warning = token_file_warning(token)
        if who is None:
            assert warning is None
        else:
            assert warning is not None and f"readable by {who}" in warning
            assert f"chmod 600 {token}" in warning


def test_metrics_listen_on_loopback_by_default(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", {
        "a": {"url": "http://f.example", "uuid": "u", "token": "t0ken-t0ken"}}, capacity=1)
    text = config.read_text()
    config.write_text(text[: text.index("[metrics]")] + text[text.index("[connections"):])
    metrics = load_config(config).metrics
    assert (metrics.host, metrics.port, metrics.enabled) == ("127.0.0.1", 9464, True)


async def test_default_metrics_host_is_not_reachable_from_outside(tmp_path: Path) -> None:
    """The service binds the default host, 127.0.0.1: a non-loopback address of this
    machine does not reach it (port 0 instead of 9464, so tests never collide)."""
    config = write_config(tmp_path / "config.toml", {
        "a": {"url": "http://127.0.0.1:9", "uuid": "u", "token": "t0ken-t0ken"}}, capacity=1,
        metrics="127.0.0.1:0")
    cfg = load_config(config)
    default_host = attrs.evolve(cfg.metrics, host=MetricsSettings().host)
    service = Service(attrs.evolve(cfg, metrics=default_host), executor=SimulatedExecutor())
    async with trio.open_nursery() as nursery:
        started = await nursery.start(service.run)
        assert started.metrics_address is not None
        host, port = started.metrics_address
        assert host == "127.0.0.1"
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
            outside = _non_loopback_address()
            if outside is not None:
                with pytest.raises(httpx.ConnectError):
                    await http.get(f"http://{outside}:{port}/healthz", timeout=5)
        service.request_stop()


def _non_loopback_address() -> str | None:
    """An IPv4 address of this host that is not loopback, if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
            address: str = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


async def test_scan_in_process_with_faults_everywhere(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Jobs print their secrets; answers are dropped, 5xx'd, UpdateLog fails, one token
    is revoked mid-run. Nothing secret reaches a log record, a row, /metrics or disk."""
    caplog.set_level(TRACE)
    for name in ("httpx", "httpcore", "hypercorn", "scheduler"):
        caplog.set_level(TRACE, logger=name)
    caplog.handler.addFilter(ContextFilter())  # the fields the formats show
    faults = FaultPlan(drop_after_assign=0.3, error_5xx=0.1, fail_update_log=0.2,
                       fail_update_task=0.1)
    async with running_sim(*(InstanceSpec(n, faults=faults) for n in "abc"), seed=11) as sim:
        env = three_sources(sim, tmp_path, monkeypatch)
        tokens = [sim.instances[n].runner.token for n in "abc"]
        (tmp_path / "state").mkdir(mode=0o755)  # too open: the service tightens it
        config = write_config(tmp_path / "config.toml", env.conns, capacity=3,
                              metrics="127.0.0.1:0")
        async with running_service(config, seed=4) as service:
            for name in "abc":
                for _ in range(4):
                    sim.instances[name].add_job(workflow=echo_secrets_workflow(),
                                                secrets={"DEPLOY": JOB_SECRET,
                                                         "OTHER": JOB_SECRET_2})
            await wait_for(lambda: sim.ledger.statistics().finished == 12)
            sim.instances["c"].runner.token = "0" * 40  # revoked: 401s from now on
            await wait_for(lambda: service.loops["c"].up is False)
            assert service.metrics_address is not None
            host, port = service.metrics_address
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as http:
                pages = {path: (await http.get(path)).text
                         for path in ("/metrics", "/healthz", "/readyz")}
            service.request_stop()
            await wait_for(lambda: service.phase == "stopped")
    secrets = all_secrets(sim, tokens)
    assert len(secrets) >= 3 + 2 + 12
    records = caplog.records
    assert len(records) > 100
    assert any(getattr(r, "task_id", None) for r in records)
    for record in records:
        text = record.getMessage() + (record.exc_text or "")
        scan(text, secrets, f"the log record {record.name}: {text[:80]!r}")
        for formatter in (TextFormatter(), JsonFormatter()):
            scan(formatter.format(record), secrets, f"the formatted record {text[:80]!r}")
    rows = [line for inst in sim.instances.values() for t in inst.tasks.values()
            for line in t.log_lines]
    printed = [line for line in rows if line.startswith(("the secret is", "and "))]
    assert len(printed) >= 24 and all("***" in line for line in printed)
    scan("\n".join(rows), secrets, "the log rows sent to the server")
    assert "forgejo_scheduler_fetch_requests_total" in pages["/metrics"]
    for path, page in pages.items():
        scan(page, secrets, path)
    scan(state_files(tmp_path / "state"), secrets, "the state directory")
    assert_private(tmp_path / "state")


@pytest.mark.parametrize(("before", "after"), [
    (("--log-level", "DEBUG"), ()),
    ((), ("--log-level", "trace", "--log-format", "json")),
], ids=["debug-text", "trace-json"])
async def test_scan_of_the_real_daemon_with_the_host_executor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: tuple[str, ...],
    after: tuple[str, ...],
) -> None:
    """A child process at DEBUG (text) or TRACE (JSON), its token file group/world
    readable, one connection insecure: it warns about both; its job (bash, via the host
    executor) prints a job secret and the task token; nothing secret is in its stderr,
    its rows, its metrics."""
    async with running_sim("a", "b", "c", seed=8) as sim, trio.open_nursery() as nursery:
        env = three_sources(sim, tmp_path, monkeypatch)
        (tmp_path / "a.token").chmod(0o644)
        env.conns["insecure"] = {"url": "https://127.0.0.1:9", "uuid": "u-x",
                                 "token": "1nsecure-t0ken-value", "insecure": True}
        config = write_config(tmp_path / "config.toml", env.conns, capacity=3,
                              metrics="127.0.0.1:0", labels=("sim:host",))
        tokens = [sim.instances[n].runner.token for n in "abc"] + ["1nsecure-t0ken-value"]
        workflow = (
            "jobs:\n  j:\n    runs-on: sim\n    steps:\n"
            "      - run: printf 'hunter2-%s\\n' 'job-secret-value'\n"
            '      - run: echo "token=$GITHUB_TOKEN"\n'
        )
        job = sim.instances["a"].add_job(workflow=workflow, secrets={"DEPLOY": JOB_SECRET})
        proc = await trio.lowlevel.open_process(
            [*CLI, *before, "run", "--config", str(config), *after], cwd=ROOT,
            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        stderr = bytearray()

        async def collect() -> None:
            assert proc.stderr is not None
            while chunk := await proc.stderr.receive_some(65536):
                stderr.extend(chunk)

        nursery.start_soon(collect)
        with trio.fail_after(60):
            while sim.ledger.statistics().finished < 1:
                await trio.sleep(0.05)
            while not (m := re.search(rb"http://127\.0\.0\.1:(\d+)/metrics", stderr)):
                await trio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{int(m.group(1))}") as http:
            pages = {path: (await http.get(path)).text
                     for path in ("/metrics", "/healthz", "/readyz")}
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            code = await proc.wait()
        nursery.cancel_scope.cancel()
    log = stderr.decode(errors="replace")
    assert code == 0, log[-3000:]
    assert f"token file {tmp_path / 'a.token'} is readable by group and others" in log
    assert "insecure = true: TLS certificates of https://127.0.0.1:9 are not verified" in log
    if after:
        entries = [json.loads(line) for line in log.splitlines()]  # every line is JSON
        assert any(e["level"] == "debug" for e in entries)
        assert any(e["logger"].startswith("httpcore") for e in entries)  # trace: scanned too
        decoded = "\n".join(str(value) for e in entries for value in e.values())
        scan(decoded, all_secrets(sim, tokens), "the daemon's JSON lines, decoded")
    else:
        assert "DEBUG" in log
    task = sim.instances["a"].task_for_job(job)
    assert task is not None and task.result is not None and task.result.name == "SUCCESS"
    assert "hunter2-***" not in task.log_lines  # the whole value is masked, not a part
    assert "***" in task.log_lines and "token=***" in task.log_lines, task.log_lines
    secrets = all_secrets(sim, tokens)
    scan(log, secrets, "the daemon's stderr")
    scan("\n".join(task.log_lines), secrets, "the rows of the host-executor job")
    for path, page in pages.items():
        scan(page, secrets, path)
    scan(state_files(tmp_path / "state"), secrets, "the state directory")
    assert_private(tmp_path / "state")
