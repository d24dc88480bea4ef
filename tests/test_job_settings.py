"""Issue 14's job settings and label rule: ``job_timeout``, ``envs``/``env_file``, and
only declaring labels an executor here runs. Config rules on parsed data; the
behaviour through the simulator and the service (MockClock where no process runs,
the real host executor where one does)."""

from __future__ import annotations

import io
import logging
import os
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from scheduler.config import config_warnings, load_config, parse_config, render_config
from scheduler.config.envfile import EnvFileError, parse_env_text
from scheduler.errors import ConfigError
from scheduler.executor.labels import parse_label, plan_labels
from scheduler.task.lifecycle import MAX_RUN_TIME_LINE
from tests.support.daemon import CLI, ROOT
from tests.support.harness import DEFAULT_EXECUTOR, world
from tests.support.polling import wait_for

Data = dict[str, Any]


def base(**runner: Any) -> Data:
    return {
        "runner": {"capacity": 2, "labels": ["debian:host"], **runner},
        "connections": {"a": {"url": "https://a.example", "uuid": "u-a", "token": "t"}},
    }


def parse(d: Data, tmp_path: Path, env: dict[str, str] | None = None) -> Any:
    return parse_config(d, source=tmp_path / "config.toml", env=env or {})


def error(d: Data, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        parse(d, tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'config.toml'}: "), message
    return message.removeprefix(f"{tmp_path / 'config.toml'}: ")


# --- job_timeout ------------------------------------------------------------------------


def test_job_timeout_defaults_to_3h_and_connections_inherit_or_override(tmp_path: Path) -> None:
    assert parse(base(), tmp_path).connections[0].job_timeout == 3 * 3600
    d = base(job_timeout="45m")
    d["connections"]["b"] = {"url": "https://b.example", "uuid": "u-b", "token": "t",
                             "job_timeout": "2h30m"}
    cfg = parse(d, tmp_path)
    assert cfg.runner.job_timeout == 2700
    assert [c.job_timeout for c in cfg.connections] == [2700, 9000]


@pytest.mark.parametrize(
    ("where", "value", "expected"),
    [
        ("runner", "0s", "runner.job_timeout: expected a duration greater than 0"),
        ("runner", True, "runner.job_timeout: expected a duration"),
        ("a", "-1m", "connections.a.job_timeout: "),
        ("a", "3d", "connections.a.job_timeout: "),
    ],
)
def test_job_timeout_errors_name_the_key(
    tmp_path: Path, where: str, value: object, expected: str
) -> None:
    d = base()
    (d["runner"] if where == "runner" else d["connections"]["a"])["job_timeout"] = value
    assert error(d, tmp_path).startswith(expected)


# --- envs and env_file ------------------------------------------------------------------


def test_job_env_layers_in_forgejo_runners_order(tmp_path: Path) -> None:
    (tmp_path / "runner.env").write_text("FROM_RUNNER_FILE=1\nSHARED=runner-file\n")
    (tmp_path / "a.env").write_text("SHARED=a-file\n")
    d = base(envs={"SHARED": "runner-envs", "ONLY_RUNNER": "r"}, env_file="runner.env")
    d["connections"]["a"].update(envs={"SHARED": "a-envs", "ONLY_A": "x"}, env_file="a.env")
    d["connections"]["b"] = {"url": "https://b.example", "uuid": "u-b", "token": "t"}
    a, b = parse(d, tmp_path).connections
    # runner envs < runner env_file < connection envs < connection env_file
    assert a.job_env == {"SHARED": "a-file", "ONLY_RUNNER": "r", "FROM_RUNNER_FILE": "1",
                         "ONLY_A": "x"}
    assert b.job_env == {"SHARED": "runner-file", "ONLY_RUNNER": "r", "FROM_RUNNER_FILE": "1"}
    assert a.env_file == tmp_path / "a.env"  # relative to the config file


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d, p: d["runner"].update(envs=["A=1"]),
         'runner.envs: expected a table like {NAME = "value"}, got an array'),
        (lambda d, p: d["runner"].update(envs={"A": 1}),
         "runner.envs.A: expected a string value, got an integer"),
        (lambda d, p: d["runner"].update(envs={"1A": "x"}),
         "runner.envs.1A: expected a variable name of letters, digits and _"),
        (lambda d, p: d["runner"].update(envs={"A B": "x"}),
         'runner.envs."A B": expected a variable name'),
        (lambda d, p: d["connections"]["a"].update(env_file="missing.env"),
         "connections.a.env_file: expected a dotenv file, but {p}/missing.env does not exist"),
        (lambda d, p: d["runner"].update(env_file="."),
         "runner.env_file: expected a dotenv file, but {p} is a directory"),
        (lambda d, p: d["runner"].update(env_file="bad.env"),
         "runner.env_file: {p}/bad.env: line 2: expected NAME=value"),
        (lambda d, p: d["runner"].update(env_file="quote.env"),
         "runner.env_file: {p}/quote.env: line 1: unterminated \"quoted\" value"),
        (lambda d, p: d["runner"].update(env_file=""),
         "runner.env_file: expected a non-empty string"),
    ],
)
def test_env_errors_name_the_file_and_key(tmp_path: Path, mutate: Any, expected: str) -> None:
    (tmp_path / "bad.env").write_text("OK=1\njust words\n")
    (tmp_path / "quote.env").write_text('A="never closed\nB=2\n')
    d = base()
    mutate(d, tmp_path)
    assert error(d, tmp_path).startswith(expected.replace("{p}", str(tmp_path)))


def test_unreadable_env_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.env"
    path.write_text("A=1\n")
    real_open = io.open

    def deny(file: Any, *args: Any, **kwargs: Any) -> Any:  # chmod 0 does not stop root
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("io.open", deny)
    d = base(env_file="secret.env")
    assert error(d, tmp_path) == f"runner.env_file: cannot read {path}: Permission denied"


def test_env_file_values_are_never_in_messages(tmp_path: Path) -> None:
    (tmp_path / "x.env").write_text("TOKEN=s3cr3t-value\nthen garbage s3cr3t-value\n")
    message = error(base(env_file="x.env"), tmp_path)
    assert "line 2" in message and "s3cr3t" not in message


def test_env_file_format() -> None:
    text = (
        "# a comment\n"
        "\n"
        "PLAIN=value with spaces   # trailing comment\n"
        "export EXPORTED=yes\n"
        "YAML_STYLE: colon\n"
        "SINGLE='literal $PLAIN \\n'\n"
        'DOUBLE="line1\\nline2 \\"q\\" ${EXPORTED} \\$HOME"\n'
        "MULTI='a\n"
        "b'\n"
        "EXPANDED=$PLAIN/${FROM_ENV}/$UNSET.\n"
        "EMPTY=\n"
        "HASH=a#b\n"
    )
    assert parse_env_text(text, {"FROM_ENV": "env"}) == {
        "PLAIN": "value with spaces",
        "EXPORTED": "yes",
        "YAML_STYLE": "colon",
        "SINGLE": "literal $PLAIN \\n",
        "DOUBLE": 'line1\nline2 "q" yes $HOME',
        "MULTI": "a\nb",
        "EXPANDED": "value with spaces/env/.",
        "EMPTY": "",
        "HASH": "a#b",
    }
    with pytest.raises(EnvFileError, match="line 1: expected a variable name"):
        parse_env_text("A B=1\n", {})


def test_env_file_expands_from_the_service_environment_given_to_load_config(
    tmp_path: Path,
) -> None:
    (tmp_path / "x.env").write_text("PROXY=http://${PROXY_HOST}:3128\n")
    config = tmp_path / "config.toml"
    config.write_text('[runner]\ncapacity = 1\nlabels = ["debian:host"]\nenv_file = "x.env"\n'
                      '[connections.a]\nurl = "https://a.example"\nuuid = "u"\ntoken = "t"\n')
    loaded = load_config(config, env={"PROXY_HOST": "proxy.lan"})
    assert loaded.connections[0].job_env == {"PROXY": "http://proxy.lan:3128"}


def test_check_config_renders_job_settings_without_env_file_values(tmp_path: Path) -> None:
    (tmp_path / "x.env").write_text("SECRETISH=do-not-print\n")
    d = base(job_timeout="90m", envs={"A": "1"}, env_file="x.env")
    d["connections"]["a"]["envs"] = {"B": "2"}
    cfg = parse(d, tmp_path)
    text = render_config(cfg)
    assert "do-not-print" not in text
    data = tomllib.loads(text)
    assert data["runner"]["job_timeout"] == "1h30m" and data["runner"]["envs"] == {"A": "1"}
    assert data["runner"]["env_file"] == str(tmp_path / "x.env")
    assert data["connections"]["a"]["envs"] == {"B": "2"}
    assert "# job environment from envs/env_file: A, B, SECRETISH" in text
    data["connections"]["a"]["token"] = "t"  # rendered redacted
    again = parse_config(data, source=tmp_path / "config.toml", env={})
    assert again.connections[0].job_env == cfg.connections[0].job_env


# --- labels -----------------------------------------------------------------------------


def test_the_label_rule() -> None:
    plan = plan_labels(["debian:host", "ubuntu:docker://node:20", "plain", "box:lxc"])
    assert plan.names == ("debian",)
    assert [(label.text, why.split(":")[0]) for label, why in plan.dropped] == [
        ("ubuntu:docker://node:20", "docker"), ("plain", "no scheme, which means docker"),
        ("box:lxc", "lxc"),
    ]
    assert parse_label("ubuntu:docker://node:20").argument == "//node:20"


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["debian:hots"], "runner.labels[0]: unknown scheme 'hots' in label 'debian:hots'"),
        (["debian:host:x"], "runner.labels[0]: label 'debian:host:x': the host scheme takes "
                            "no argument (write debian:host)"),
        (["ubuntu:docker://node:20", "big"],
         "runner.labels: no label of connection a can run here, so it would declare none and "
         "be offered no jobs: ubuntu:docker://node:20 (docker: needs a container executor"),
    ],
)
def test_label_errors(tmp_path: Path, labels: list[str], expected: str) -> None:
    assert error(base(labels=labels), tmp_path).startswith(expected)


def test_dropped_labels_are_listed_by_check_config_and_warned(tmp_path: Path) -> None:
    d = base(labels=["debian:host", "ubuntu:docker://node:20"])
    d["connections"]["b"] = {"url": "https://b.example", "uuid": "u-b", "token": "t",
                             "labels": ["x:host"]}
    cfg = parse(d, tmp_path)
    text = render_config(cfg)
    section_a = text[text.index("[connections.a]"):text.index("[connections.b]")]
    assert "# declared to Forgejo: debian\n" in section_a
    assert ("# not declared: ubuntu:docker://node:20: docker: needs a container executor"
            in section_a)
    assert "# declared to Forgejo: x\n" in text[text.index("[connections.b]"):]
    warnings = [w for w in config_warnings(cfg) if "not declared" in w]
    assert warnings == [
        "connections.a: labels not declared to Forgejo (kept in the file): "
        "ubuntu:docker://node:20 (docker: needs a container executor; this runner has the "
        "host executor only); declared: debian"
    ]


def test_check_config_cli_prints_the_warning(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[runner]\ncapacity = 1\nlabels = ["debian:host", "u:docker://n"]\n'
                      '[connections.a]\nurl = "http://127.0.0.1:1"\nuuid = "u"\ntoken = "t"\n')

    async def main() -> Any:
        return await trio.run_process([*CLI, "check-config", "--config", str(config)], cwd=ROOT,
                                      capture_stdout=True, capture_stderr=True, check=False)

    proc = trio.run(main)
    assert proc.returncode == 0
    assert (b"warning: connections.a: labels not declared to Forgejo (kept in the file): "
            b"u:docker://n") in proc.stderr
    assert b"# declared to Forgejo: debian" in proc.stdout


# --- through the service ----------------------------------------------------------------


async def test_job_timeout_cancels_a_job_per_connection(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path, ["a", "b"], capacity=2,
                     tuning={"a": {"job_timeout": "1m"}}) as (sim, service, _):
        assert [c.job_timeout for c in service.config.connections] == [60, 3 * 3600]
        start = trio.current_time()
        job_a = sim.instances["a"].add_job(duration=600)
        job_b = sim.instances["b"].add_job(duration=600)
        await wait_for(lambda: (t := sim.instances["a"].task_for_job(job_a)) is not None
                       and t.done)
        assert 60 <= trio.current_time() - start < 70
        task_a = sim.instances["a"].task_for_job(job_a)
        task_b = sim.instances["b"].task_for_job(job_b)
        assert task_a is not None and task_b is not None
        assert not task_b.done  # 3h by default
        await wait_for(lambda: task_b.done)
    assert task_a.result.name == "CANCELLED" and task_a.log_lines[-1] == MAX_RUN_TIME_LINE
    assert task_b.result.name == "SUCCESS"


async def test_only_labels_that_can_run_are_declared_and_warned_at_start_and_reload(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    labels = ("sim:host", "big:docker://node:20", "plain")
    async with world(tmp_path, ["a", "b"], capacity=2, labels=labels) as (sim, service, ex):
        inst = sim.instances["a"]
        await wait_for(lambda: all(loop.declared for loop in service.loops.values()))
        assert inst.runner.labels == ["sim"]  # what the simulator was told by Declare
        assert sim.instances["b"].runner.labels == ["sim"]
        docker_job = inst.add_job(runs_on=("big",), duration=1)
        host_job = inst.add_job(runs_on=("sim",), duration=1)
        await wait_for(lambda: (t := inst.task_for_job(host_job)) is not None and t.done)
        await trio.sleep(30)
        assert inst.task_for_job(docker_job) is None  # left for a runner that can run it
        started = [r.getMessage() for r in caplog.records if "not declared" in r.getMessage()]
        assert len(started) == 2 and all(
            "labels not declared to Forgejo (kept in the file): big:docker://node:20 (docker: "
            "needs a container executor" in m and "; declared: sim" in m for m in started)
        assert [m.split(":")[0] for m in started] == ["connections.a", "connections.b"]

        # A reload that changes the labels: warned again, declared again.
        caplog.clear()
        config = service.config
        conns = tuple(attrs.evolve(c, labels=("sim:host", "gpu:lxc"))
                      for c in config.connections)
        service.reload(attrs.evolve(config, connections=conns))
        await wait_for(lambda: inst.runner.labels == ["sim"] and inst.rpc_counts["Declare"] >= 2)
        again = [r.getMessage() for r in caplog.records if "not declared" in r.getMessage()]
        assert again == [
            f"reload: connections.{n}: labels not declared to Forgejo (kept in the file): "
            "gpu:lxc (lxc: needs a container executor; this runner has the host executor "
            "only); declared: sim" for n in "ab"
        ]
    task = inst.task_for_job(host_job)
    assert task is not None and ex.executed == [task.id]  # the docker job never ran here


async def test_envs_and_env_file_reach_a_real_host_job(tmp_path: Path) -> None:
    """The real host executor, as ``run`` builds it: the connection's env_file over the
    runner's envs, under the runner's own variables, over the workflow's env."""
    env_file = tmp_path / "jobs.env"
    env_file.write_text("FROM_FILE=file\nOVERRIDE=file\nGITHUB_SERVER_URL=http://wrong\n")
    workflow = (
        "on: push\n"
        "env:\n  OVERRIDE: workflow\n  WF_ONLY: wf\n"
        "jobs:\n  job:\n    runs-on: sim\n"
        "    steps:\n"
        "      - run: echo \"got $FROM_FILE $OVERRIDE $WF_ONLY $GITHUB_SERVER_URL\"\n"
        "      - run: echo \"step $OVERRIDE\"\n"
        "        env:\n          OVERRIDE: step\n"
    )
    async with world(tmp_path, ["a"], capacity=1, fetch_interval=0.1,
                     tuning={"a": {"env_file": str(env_file)}},
                     executor=DEFAULT_EXECUTOR) as (sim, _, _):
        inst = sim.instances["a"]
        job = inst.add_job(workflow=workflow)
        await wait_for(lambda: (t := inst.task_for_job(job)) is not None and t.done, within=60)
        task = inst.task_for_job(job)
    assert task is not None and task.result.name == "SUCCESS", task and task.log_lines
    # env_file over the workflow's env:, the runner's own GITHUB_SERVER_URL over env_file.
    (got,) = [line for line in task.log_lines if line.startswith("got ")]
    assert got.startswith("got file file wf http") and "wrong" not in got
    assert "step step" in task.log_lines
