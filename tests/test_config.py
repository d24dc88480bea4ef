"""The config file: defaults, every validation rule and its message, secrets never shown."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from scheduler import config as config_module
from scheduler.config import (
    Config,
    ConnectionSettings,
    config_warnings,
    load_config,
    parse_config,
    render_config,
    token_file_warning,
)
from scheduler.errors import ConfigError
from tests.support.config import toml_tables

REPO = Path(__file__).resolve().parent.parent

# Shaped like a real Forgejo runner token (40 hex digits) and distinctive enough that
# finding it anywhere in output is never a coincidence.
TOKEN = "c0ffee" + "d3adb33f" * 4 + "42"
ENV = {"TOK_A": TOKEN, "TOK_B": "other-token-b"}

Data = dict[str, Any]


def base() -> Data:
    """A minimal valid config: one connection, everything else default."""
    return {
        "runner": {"capacity": 4, "labels": ["debian:host"]},
        "connections": {
            "a": {"url": "https://a.example", "uuid": "uuid-a", "token_env": "TOK_A"},
        },
    }


def two() -> Data:
    d = base()
    d["connections"]["b"] = {"url": "https://b.example", "uuid": "uuid-b", "token_env": "TOK_B"}
    return d


def conn(d: Data, name: str = "a") -> Data:
    result: Data = d["connections"][name]
    return result


def parse(d: Data, tmp_path: Path, env: dict[str, str] | None = None) -> Config:
    return parse_config(d, source=tmp_path / "config.toml", env=ENV if env is None else env)


def error(d: Data, tmp_path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(d, tmp_path, env)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'config.toml'}: "), message
    return message.removeprefix(f"{tmp_path / 'config.toml'}: ")


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# ---------------------------------------------------------------------------------------
# Defaults and accepted forms


def test_minimal_config_fills_every_default(tmp_path: Path) -> None:
    cfg = parse(base(), tmp_path)
    r = cfg.runner
    assert (r.capacity, r.fetch_interval, r.fetch_timeout, r.report_interval) == (4, 2.0, 30.0, 1.0)
    assert r.shutdown_timeout == 600.0
    assert r.state_dir == tmp_path / "state"
    assert r.state_dir.is_absolute()
    assert cfg.metrics == config_module.MetricsSettings(host="127.0.0.1", port=9464, enabled=True)
    (c,) = cfg.connections
    assert c.name == "a"
    assert c.token == TOKEN
    assert c.token_source == "env:TOK_A"
    assert c.labels == ("debian:host",)  # inherited from runner.labels
    assert (c.weight, c.min_slots, c.max_slots) == (1.0, 0, 4)  # max_slots = capacity
    assert c.fetch_interval == 2.0  # inherited from runner.fetch_interval
    assert (c.ca_file, c.insecure) == (None, False)
    assert cfg.source == tmp_path / "config.toml"


def test_connection_overrides_and_durations(tmp_path: Path) -> None:
    d = base()
    d["runner"].update(fetch_interval="1m30s", fetch_timeout=45, shutdown_timeout="0s")
    conn(d).update(
        labels=["bookworm:host"], weight=2.5, min_slots=1, max_slots=3, fetch_interval="500ms"
    )
    cfg = parse(d, tmp_path)
    assert cfg.runner.fetch_interval == 90.0
    assert cfg.runner.fetch_timeout == 45.0
    assert cfg.runner.shutdown_timeout == 0.0  # zero is allowed: cancel at once
    d["runner"].update(shutdown_resolve_timeout="0s", shutdown_report_timeout="1m")
    runner = parse(d, tmp_path).runner
    assert (runner.shutdown_resolve_timeout, runner.shutdown_report_timeout) == (0.0, 60.0)
    c = cfg.connections[0]
    assert (c.labels, c.weight, c.min_slots, c.max_slots) == (("bookworm:host",), 2.5, 1, 3)
    assert c.fetch_interval == 0.5


def test_url_is_normalised_without_trailing_slash(tmp_path: Path) -> None:
    d = base()
    conn(d)["url"] = "https://a.example/forgejo/"
    assert parse(d, tmp_path).connections[0].url == "https://a.example/forgejo"


def test_connections_keep_file_order(tmp_path: Path) -> None:
    text = """
[runner]
capacity = 2
labels = ["x:host"]
[connections.zulu]
url = "http://z.example"
uuid = "z"
token = "tz"
[connections.alpha]
url = "http://a.example"
uuid = "a"
token = "ta"
[connections."mid.dle_1-x"]
url = "http://m.example"
uuid = "m"
token = "tm"
"""
    cfg = load_config(write(tmp_path / "c.toml", text))
    assert [c.name for c in cfg.connections] == ["zulu", "alpha", "mid.dle_1-x"]
    assert [c.token_source for c in cfg.connections] == ["config"] * 3


@pytest.mark.parametrize(
    ("listen", "host", "port", "enabled"),
    [
        ("127.0.0.1:9464", "127.0.0.1", 9464, True),
        ("0.0.0.0:0", "0.0.0.0", 0, True),
        ("[::1]:9464", "::1", 9464, True),
        ("localhost:9100", "localhost", 9100, True),
        ("metrics.internal.example:65535", "metrics.internal.example", 65535, True),
        ("", "127.0.0.1", 9464, False),
    ],
)
def test_metrics_listen_forms(
    tmp_path: Path, listen: str, host: str, port: int, enabled: bool
) -> None:
    d = base()
    d["metrics"] = {"listen": listen}
    m = parse(d, tmp_path).metrics
    assert (m.host, m.port, m.enabled) == (host, port, enabled)


def test_metrics_enabled_false_disables_but_keeps_the_address(tmp_path: Path) -> None:
    d = base()
    d["metrics"] = {"listen": "127.0.0.1:9999", "enabled": False}
    m = parse(d, tmp_path).metrics
    assert (m.port, m.enabled) == (9999, False)


def test_values_are_frozen(tmp_path: Path) -> None:
    cfg = parse(base(), tmp_path)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cfg.runner.capacity = 9  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cfg.connections[0].token = "x"  # type: ignore[misc]


def test_env_defaults_to_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOK_A", "from-os-environ")
    cfg = parse_config(base(), source=tmp_path / "config.toml")
    assert cfg.connections[0].token == "from-os-environ"


def test_memory_source_anchors_relative_paths_at_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = parse_config(base(), source=Path("<memory>"), env=ENV)
    assert cfg.runner.state_dir == tmp_path / "state"
    assert cfg.source == Path("<memory>")


# ---------------------------------------------------------------------------------------
# Validation: one message per mistake, naming key and expectation

Mutation = Callable[[Data], object]

ERRORS: list[tuple[str, Mutation, str]] = [
    # unknown keys at every level, with suggestions
    (
        "top-typo",
        lambda d: d.update(runer={}),
        "runer: unknown key at the top level (did you mean 'runner'?)",
    ),
    (
        "top-misplaced",
        lambda d: d.update(capacity=4),
        "capacity: unknown key at the top level ('capacity' belongs in [runner])",
    ),
    (
        "runner-typo",
        lambda d: d["runner"].update(capacty=4),
        "runner.capacty: unknown key in [runner] (did you mean 'capacity'?)",
    ),
    (
        "metrics-unknown",
        lambda d: d.update(metrics={"port": 1}),
        "metrics.port: unknown key in [metrics]; valid keys: listen, enabled",
    ),
    (
        "conn-typo",
        lambda d: conn(d).update(max_slot=2),
        "connections.a.max_slot: unknown key in [connections.a] (did you mean 'max_slots'?)",
    ),
    (
        "conn-misplaced",
        lambda d: conn(d).update(shutdown_timeout="1s"),
        "('shutdown_timeout' belongs in [runner])",
    ),
    # runner
    ("runner-missing", lambda d: d.pop("runner"), "runner: missing table [runner]"),
    (
        "runner-not-table",
        lambda d: d.update(runner=4),
        "runner: expected a table [runner], got an integer (4)",
    ),
    (
        "capacity-missing",
        lambda d: d["runner"].pop("capacity"),
        "runner.capacity: missing; expected an integer >= 1",
    ),
    (
        "capacity-zero",
        lambda d: d["runner"].update(capacity=0),
        "runner.capacity: expected an integer >= 1 (the number of tasks run at once), got 0",
    ),
    (
        "capacity-bool",
        lambda d: d["runner"].update(capacity=True),
        "runner.capacity: expected "
        "an integer >= 1 (the number of tasks run at once), got a boolean (true)",
    ),
    (
        "capacity-float",
        lambda d: d["runner"].update(capacity=4.0),
        "runner.capacity: expected "
        "an integer >= 1 (the number of tasks run at once), got a float (4.0)",
    ),
    ("capacity-string", lambda d: d["runner"].update(capacity="4"), 'got a string ("4")'),
    (
        "fetch-interval-unit",
        lambda d: d["runner"].update(fetch_interval="2x"),
        'runner.fetch_interval: unknown unit "x" in "2x"',
    ),
    (
        "fetch-interval-zero",
        lambda d: d["runner"].update(fetch_interval="0s"),
        'runner.fetch_interval: expected a duration greater than 0, got a string ("0s")',
    ),
    (
        "fetch-timeout-negative",
        lambda d: d["runner"].update(fetch_timeout=-1),
        "runner.fetch_timeout: expected a non-negative duration, got an integer (-1)",
    ),
    (
        "report-interval-bool",
        lambda d: d["runner"].update(report_interval=True),
        "runner.report_interval: expected a duration such as",
    ),
    (
        "shutdown-garbage",
        lambda d: d["runner"].update(shutdown_timeout="10 minutes"),
        "runner.shutdown_timeout: missing unit after 10",
    ),
    (
        "shutdown-report-zero",
        lambda d: d["runner"].update(shutdown_report_timeout="0s"),
        'runner.shutdown_report_timeout: expected a duration greater than 0, got a string ("0s")',
    ),
    (
        "shutdown-resolve-negative",
        lambda d: d["runner"].update(shutdown_resolve_timeout=-1),
        "runner.shutdown_resolve_timeout: expected a non-negative duration, got an integer (-1)",
    ),
    (
        "state-dir-type",
        lambda d: d["runner"].update(state_dir=5),
        "runner.state_dir: expected a non-empty string, got an integer (5)",
    ),
    (
        "labels-not-array",
        lambda d: d["runner"].update(labels="debian:host"),
        'runner.labels: expected an array of label strings like ["debian:host"], got a string',
    ),
    (
        "labels-item-type",
        lambda d: d["runner"].update(labels=["ok:host", 3]),
        "runner.labels[1]: expected a non-empty label string, got an integer (3)",
    ),
    (
        "labels-item-empty",
        lambda d: d["runner"].update(labels=[""]),
        "runner.labels[0]: expected a non-empty label string, got an empty string",
    ),
    (
        "labels-space",
        lambda d: d["runner"].update(labels=["debian host"]),
        "runner.labels[0]: expected a label without spaces or commas",
    ),
    (
        "labels-duplicate",
        lambda d: d["runner"].update(labels=["debian:host", "debian:docker"]),
        "runner.labels[1]: duplicate label name 'debian' (already given as 'debian:host')",
    ),
    (
        "labels-none",
        lambda d: d["runner"].pop("labels"),
        "connections.a.labels: no labels: set labels here or runner.labels",
    ),
    (
        "labels-empty-own",
        lambda d: (d["runner"].pop("labels"), conn(d).update(labels=[])),
        "connections.a.labels: no labels",
    ),
    # metrics
    (
        "metrics-not-table",
        lambda d: d.update(metrics="127.0.0.1:1"),
        "metrics: expected a table [metrics]",
    ),
    (
        "listen-int",
        lambda d: d.update(metrics={"listen": 9464}),
        "metrics.listen: expected an "
        'address "host:port" (e.g. "127.0.0.1:9464", "[::1]:9464") or "" to disable, got an '
        "integer (9464)",
    ),
    (
        "listen-no-port",
        lambda d: d.update(metrics={"listen": "localhost"}),
        'metrics.listen: expected an address "host:port"',
    ),
    ("listen-port-only", lambda d: d.update(metrics={"listen": "9464"}), "metrics.listen: exp"),
    ("listen-empty-host", lambda d: d.update(metrics={"listen": ":9464"}), "metrics.listen: exp"),
    ("listen-bare-v6", lambda d: d.update(metrics={"listen": "::1:9464"}), "metrics.listen: exp"),
    ("listen-bad-v6", lambda d: d.update(metrics={"listen": "[nothost]:1"}), "metrics.listen: e"),
    ("listen-v6-no-port", lambda d: d.update(metrics={"listen": "[::1]"}), "metrics.listen: ex"),
    ("listen-port-range", lambda d: d.update(metrics={"listen": "h:65536"}), "metrics.listen: e"),
    ("listen-bad-host", lambda d: d.update(metrics={"listen": "a b:1"}), "metrics.listen: exp"),
    ("listen-bad-ipv4", lambda d: d.update(metrics={"listen": "300.1.2.3:1"}), "metrics.listen: "),
    (
        "enabled-string",
        lambda d: d.update(metrics={"enabled": "yes"}),
        'metrics.enabled: expected true or false, got a string ("yes")',
    ),
    # connections as a whole
    (
        "no-connections",
        lambda d: d.pop("connections"),
        "connections: no connections configured; add at least one [connections.<name>] table",
    ),
    ("empty-connections", lambda d: d.update(connections={}), "connections: no connections"),
    (
        "connections-not-table",
        lambda d: d.update(connections=[1]),
        "connections: expected a table [connections], got an array",
    ),
    (
        "key-outside-table",
        lambda d: d["connections"].update(url="https://x"),
        "connections.url: expected a table [connections.url] for a connection, got a string",
    ),
    (
        "name-dash-first",
        lambda d: d["connections"].update({"-a": conn(d)}),
        "connections.-a: invalid connection name: expected 1-64 characters",
    ),
    ("name-slash", lambda d: d["connections"].update({"a/b": conn(d)}), "invalid connection name"),
    ("name-space", lambda d: d["connections"].update({"a b": conn(d)}), "invalid connection name"),
    ("name-empty", lambda d: d["connections"].update({"": conn(d)}), "invalid connection name"),
    (
        "name-too-long",
        lambda d: d["connections"].update({"x" * 65: conn(d)}),
        "invalid connection name",
    ),
    (
        "name-case-clash",
        lambda d: d["connections"].update(A=dict(conn(d), uuid="other")),
        "connections.A: name clashes with connections.a (names are file names and must differ in "
        "more than letter case)",
    ),
    (
        "same-registration",
        lambda d: d["connections"].update(b=dict(conn(d), url="https://A.example/")),
        "connections.b: same url and uuid as connections.a",
    ),
    (
        "min-slots-sum",
        lambda d: (d.update(two()), conn(d).update(min_slots=3), conn(d, "b").update(min_slots=2)),
        "connections: sum of min_slots (5: a=3, b=2) exceeds runner.capacity (4)",
    ),
    # one connection
    (
        "url-missing",
        lambda d: conn(d).pop("url"),
        "connections.a.url: missing; expected a non-empty string",
    ),
    (
        "url-type",
        lambda d: conn(d).update(url=5),
        "connections.a.url: expected a non-empty string, got an integer (5)",
    ),
    (
        "url-scheme",
        lambda d: conn(d).update(url="ftp://a.example"),
        "connections.a.url: "
        'expected an http:// or https:// URL with a host, like "https://forgejo.example", got a '
        'string ("ftp://a.example")',
    ),
    (
        "url-no-scheme",
        lambda d: conn(d).update(url="a.example"),
        "connections.a.url: expected an http:// or https:// URL",
    ),
    ("url-no-host", lambda d: conn(d).update(url="https:///forgejo"), "(no host)"),
    ("url-empty-host", lambda d: conn(d).update(url="https://"), "(no host)"),
    ("url-bad-port", lambda d: conn(d).update(url="https://a.example:https/"), "(bad port)"),
    (
        "url-query",
        lambda d: conn(d).update(url="https://a.example/?x=1"),
        "without ?query or #fragment",
    ),
    (
        "uuid-missing",
        lambda d: conn(d).pop("uuid"),
        "connections.a.uuid: missing; expected a non-empty string",
    ),
    (
        "uuid-empty",
        lambda d: conn(d).update(uuid="  "),
        "connections.a.uuid: expected a non-empty string, got an empty string",
    ),
    (
        "uuid-type",
        lambda d: conn(d).update(uuid=12),
        "connections.a.uuid: expected a non-empty string, got an integer (12)",
    ),
    (
        "token-none",
        lambda d: conn(d).pop("token_env"),
        "connections.a: expected exactly one of token_file, token_env or token, got none",
    ),
    (
        "token-two",
        lambda d: conn(d).update(token="x"),
        "connections.a: expected exactly one of "
        "token_file, token_env or token, got token_env and token",
    ),
    (
        "token-three",
        lambda d: conn(d).update(token="x", token_file="f"),
        "got token_file and token_env and token",
    ),
    (
        "weight-zero",
        lambda d: conn(d).update(weight=0),
        "connections.a.weight: expected a number greater than 0, got 0",
    ),
    (
        "weight-negative",
        lambda d: conn(d).update(weight=-1.5),
        "connections.a.weight: expected a number greater than 0, got -1.5",
    ),
    (
        "weight-bool",
        lambda d: conn(d).update(weight=True),
        "connections.a.weight: expected a number greater than 0, got a boolean (true)",
    ),
    ("weight-string", lambda d: conn(d).update(weight="2"), 'got a string ("2")'),
    (
        "weight-inf",
        lambda d: conn(d).update(weight=float("inf")),
        "connections.a.weight: expected a number greater than 0, got inf",
    ),
    (
        "min-slots-negative",
        lambda d: conn(d).update(min_slots=-1),
        "connections.a.min_slots: expected an integer >= 0, got -1",
    ),
    (
        "min-slots-bool",
        lambda d: conn(d).update(min_slots=False),
        "connections.a.min_slots: expected an integer >= 0, got a boolean (false)",
    ),
    (
        "max-slots-above-capacity",
        lambda d: conn(d).update(max_slots=7),
        "connections.a.max_slots: expected an integer between 1 and capacity (4), got 7",
    ),
    (
        "max-slots-zero",
        lambda d: conn(d).update(max_slots=0),
        "connections.a.max_slots: expected an integer between 1 and capacity (4), got 0",
    ),
    (
        "min-above-max",
        lambda d: conn(d).update(min_slots=3, max_slots=2),
        "connections.a.min_slots: expected an integer between 0 and max_slots (2), got 3",
    ),
    (
        "conn-fetch-interval",
        lambda d: conn(d).update(fetch_interval="fast"),
        'connections.a.fetch_interval: expected a duration such as "2s"',
    ),
    (
        "ca-file-missing",
        lambda d: conn(d).update(ca_file="ca.pem"),
        "connections.a.ca_file: expected a PEM file, but ",
    ),
    (
        "ca-file-type",
        lambda d: conn(d).update(ca_file=True),
        "connections.a.ca_file: expected a non-empty string, got a boolean (true)",
    ),
    (
        "insecure-type",
        lambda d: conn(d).update(insecure="no"),
        'connections.a.insecure: expected true or false, got a string ("no")',
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [(m, e) for _, m, e in ERRORS], ids=[i for i, _, _ in ERRORS]
)
def test_invalid_config_fails_with_file_key_and_expectation(
    tmp_path: Path, mutate: Mutation, expected: str
) -> None:
    d = base()
    mutate(d)
    assert expected in error(d, tmp_path)


def test_the_documented_message_shape(tmp_path: Path) -> None:
    d = base()
    conn(d)["max_slots"] = 7
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path / "config.toml", toml_tables(d)), env=ENV)
    assert str(info.value) == (
        f"{tmp_path / 'config.toml'}: connections.a.max_slots: "
        "expected an integer between 1 and capacity (4), got 7"
    )


def test_unknown_key_lists_valid_keys_when_nothing_is_close(tmp_path: Path) -> None:
    d = base()
    conn(d)["colour"] = "blue"
    message = error(d, tmp_path)
    assert "did you mean" not in message
    assert "valid keys: url, uuid, token_file, token_env, token, labels" in message


@pytest.mark.parametrize("explicit", [True, False])
def test_state_dir_that_is_a_file(tmp_path: Path, explicit: bool) -> None:
    write(tmp_path / "state", "")
    d = base()
    if explicit:
        d["runner"]["state_dir"] = "state"
    assert error(d, tmp_path) == (
        f"runner.state_dir: expected a directory, but {tmp_path / 'state'} is not one"
    )


def test_ca_file_and_insecure_together(tmp_path: Path) -> None:
    write(tmp_path / "ca.pem", "-----BEGIN CERTIFICATE-----\n")
    d = base()
    conn(d).update(ca_file="ca.pem")
    assert parse(d, tmp_path).connections[0].ca_file == tmp_path / "ca.pem"
    conn(d).update(insecure=True)
    assert error(d, tmp_path).startswith("connections.a.insecure: insecure = true skips TLS")


def test_structure_errors_come_before_missing_secrets(tmp_path: Path) -> None:
    d = two()
    conn(d, "b")["weight"] = 0
    # TOK_A is unset too, but the typo in the second connection is reported first.
    assert error(d, tmp_path, env={}).startswith("connections.b.weight:")


# ---------------------------------------------------------------------------------------
# Tokens


def test_token_file_is_stripped_and_resolved_against_the_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secrets").mkdir()
    write(tmp_path / "secrets" / "a.token", f"  {TOKEN}\n\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    d = base()
    del conn(d)["token_env"]
    conn(d)["token_file"] = "secrets/a.token"
    c = parse(d, tmp_path).connections[0]
    assert c.token == TOKEN
    assert c.token_source == f"file:{tmp_path / 'secrets' / 'a.token'}"


def test_inline_token(tmp_path: Path) -> None:
    d = base()
    del conn(d)["token_env"]
    conn(d)["token"] = TOKEN
    c = parse(d, tmp_path).connections[0]
    assert (c.token, c.token_source) == (TOKEN, "config")


def _with_token_file(content: str | None, tmp_path: Path, *, kind: str = "file") -> Data:
    d = base()
    del conn(d)["token_env"]
    path = tmp_path / "a.token"
    if kind == "dir":
        path.mkdir()
    elif content is not None:
        write(path, content)
    conn(d)["token_file"] = "a.token"
    return d


@pytest.mark.parametrize(
    ("content", "kind", "expected"),
    [
        (None, "file", "token file {p} does not exist"),
        ("", "file", "token file {p} is empty"),
        (" \n\n", "file", "token file {p} is empty"),
        (None, "dir", "token file {p} is a directory"),
        (
            f"{TOKEN}\nsecond-line\n",
            "file",
            "token in file {p} contains whitespace or control "
            "characters inside it (value not shown)",
        ),
    ],
    ids=["missing", "empty", "blank", "directory", "two-lines"],
)
def test_token_file_problems(tmp_path: Path, content: str | None, kind: str, expected: str) -> None:
    d = _with_token_file(content, tmp_path, kind=kind)
    message = error(d, tmp_path)
    assert message.startswith(
        "connections.a.token_file: " + expected.format(p=tmp_path / "a.token")
    )


def test_token_file_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _with_token_file(TOKEN, tmp_path)
    _deny_reading(tmp_path / "a.token", monkeypatch)
    assert error(d, tmp_path) == (
        f"connections.a.token_file: token file {tmp_path / 'a.token'} is not readable "
        "(permission denied)"
    )


def _deny_reading(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod 0 does not stop root (tests may run as root), so make open() refuse."""
    (path).chmod(0)
    real_open = open

    def fake_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    monkeypatch.setattr("io.open", fake_open)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "connections.a.token_env: environment variable TOK_A is not set"),
        ({"TOK_A": ""}, "connections.a.token_env: environment variable TOK_A is empty"),
        ({"TOK_A": " \n"}, "connections.a.token_env: environment variable TOK_A is empty"),
        (
            {"TOK_A": "two words"},
            "connections.a.token_env: environment variable TOK_A contains "
            "whitespace or control characters",
        ),
    ],
)
def test_token_env_problems(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    assert error(base(), tmp_path, env=env).startswith(expected)


@pytest.mark.parametrize("name", ["1ABC", "MY TOKEN", "A-B", ""])
def test_token_env_must_be_a_variable_name(tmp_path: Path, name: str) -> None:
    d = base()
    conn(d)["token_env"] = name
    message = error(d, tmp_path)
    assert message.startswith("connections.a.token_env: expected ")
    if name:
        assert name not in message


def test_inline_token_must_be_a_string(tmp_path: Path) -> None:
    d = base()
    del conn(d)["token_env"]
    conn(d)["token"] = 123456789
    assert error(d, tmp_path) == (
        "connections.a.token: expected a non-empty string, got an integer"
    )


def test_token_never_appears_in_errors_repr_or_rendering(tmp_path: Path) -> None:
    """Every path where the token is at hand: the message must not carry it."""

    def with_inline(d: Data) -> Data:
        del conn(d)["token_env"]
        conn(d)["token"] = TOKEN
        return d

    write(tmp_path / "two-lines.token", f"{TOKEN}\nmore\n")
    cases: list[tuple[Mutation, dict[str, str]]] = [
        (lambda d: with_inline(d)["runner"].update(capacity=0), ENV),
        (lambda d: conn(with_inline(d)).update(max_slots=7), ENV),
        (lambda d: conn(with_inline(d)).update(token=TOKEN + " trailing-word"), ENV),
        (lambda d: conn(with_inline(d)).update(token=[TOKEN]), ENV),
        (lambda d: conn(with_inline(d)).update(token_env="TOK_A"), ENV),  # two sources
        (lambda d: conn(with_inline(d)).update(tokn=TOKEN), ENV),  # unknown key
        (lambda d: conn(d).update(token_env=TOKEN), ENV),  # pasted the token, not its name
        (lambda d: (conn(d).pop("token_env"), conn(d).update(token_file=TOKEN)), ENV),
        (lambda d: (conn(d).pop("token_env"), conn(d).update(token_file="two-lines.token")), ENV),
        (lambda d: None, {"TOK_A": TOKEN + "\tx"}),
        (lambda d: conn(d).update(url=f"https://runner:{TOKEN}@a.example"), ENV),
        (lambda d: conn(d).update(url=f"https://a.example/?token={TOKEN}"), ENV),
        (lambda d: d.update(two()) or conn(d, "b").update(token_env="TOK_A", weight=-1), ENV),
    ]
    for mutate, env in cases:
        d = base()
        mutate(d)
        with pytest.raises(ConfigError) as info:
            parse(d, tmp_path, env)
        assert TOKEN not in str(info.value)
        assert TOKEN[:16] not in str(info.value)

    cfg = parse(base(), tmp_path)
    assert cfg.connections[0].token == TOKEN
    for shown in (repr(cfg), str(cfg), repr(cfg.connections[0]), render_config(cfg)):
        assert TOKEN not in shown
    # Equality still sees the token (two configs with different tokens differ).
    assert cfg.connections[0] != attrs.evolve(cfg.connections[0], token="x")


# ---------------------------------------------------------------------------------------
# Loading files


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: configuration file not found$"):
        load_config(tmp_path / "nope.toml", env=ENV)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a configuration file, got a directory"):
        load_config(tmp_path, env=ENV)


def test_load_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "config.toml", toml_tables(base()))
    _deny_reading(path, monkeypatch)
    with pytest.raises(ConfigError, match="cannot read configuration file: permission denied"):
        load_config(path, env=ENV)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[runner]\ncapacity = 4\nfetch_interval = 2s\n", 3),
        ("[runner]\ncapacity = 4\n[runner]\ncapacity = 5\n", 3),  # duplicate table
        ("[connections.a]\nurl = 'x'\nurl = 'y'\n", 3),  # duplicate key
    ],
)
def test_load_invalid_toml_reports_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path / "config.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=ENV)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert f"line {line}" in message


def test_load_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"[runner]\ncapacity = 4 # \xff\n")
    with pytest.raises(ConfigError, match="invalid TOML: not UTF-8"):
        load_config(path, env=ENV)


def test_load_resolves_paths_against_the_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    write(etc / "ca.pem", "pem")
    d = base()
    d["runner"]["state_dir"] = "var/state"
    conn(d)["ca_file"] = "ca.pem"
    path = write(etc / "config.toml", toml_tables(d))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("etc/config.toml"), env=ENV)
    assert cfg.runner.state_dir == etc / "var" / "state"
    assert cfg.connections[0].ca_file == etc / "ca.pem"
    assert load_config(path, env=ENV).runner.state_dir == etc / "var" / "state"


# ---------------------------------------------------------------------------------------
# The example config.toml and the docs can never rot


def test_example_config_is_valid_given_its_environment() -> None:
    env = {"FORGEJO_TOKEN_CODEBERG": "t-codeberg", "FORGEJO_TOKEN_INTERNAL": "t-internal"}
    cfg = load_config(REPO / "config.toml", env=env)
    assert cfg.runner.capacity == 4
    assert cfg.runner.shutdown_timeout == 600.0
    assert [c.name for c in cfg.connections] == ["codeberg", "internal"]
    codeberg, internal = cfg.connections
    assert codeberg.url == "https://codeberg.example"
    assert (codeberg.weight, codeberg.min_slots, codeberg.max_slots) == (2.0, 1, 3)
    assert codeberg.fetch_interval == 5.0
    assert internal.labels == cfg.runner.labels
    assert internal.max_slots == cfg.runner.capacity


def test_example_config_without_env_names_the_missing_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(REPO / "config.toml", env={})
    assert str(info.value).endswith(
        "connections.codeberg.token_env: environment variable FORGEJO_TOKEN_CODEBERG is not set"
    )


def test_example_and_reference_mention_every_key() -> None:
    example = (REPO / "config.toml").read_text()
    reference = (REPO / "docs" / "configuration.md").read_text()
    keys = {
        "runner": config_module._RUNNER_KEYS,
        "metrics": config_module._METRICS_KEYS,
        "logging": config_module._LOGGING_KEYS,
        "connections.<name>": config_module._CONNECTION_KEYS,
    }
    for section, names in keys.items():
        for key in names:
            assert re.search(rf"^#?\s*{key}\s*=", example, re.M), f"config.toml lacks {key}"
            assert f"`{key}`" in reference, f"docs/configuration.md lacks {section}.{key}"


# ---------------------------------------------------------------------------------------
# render_config and warnings


def test_render_fills_defaults_redacts_tokens_and_parses_as_toml(tmp_path: Path) -> None:
    d = two()
    d["metrics"] = {"listen": "[::1]:0"}
    d["connections"]["with.dots"] = {
        "url": "http://c.example/",
        "uuid": "uuid-c",
        "token": "inline-secret",
        "insecure": True,
        "fetch_interval": "1m30s",
    }
    cfg = parse(d, tmp_path)
    text = render_config(cfg)
    assert "inline-secret" not in text
    data = tomllib.loads(text)
    assert data["runner"] == {
        "capacity": 4,
        "fetch_interval": "2s",
        "fetch_timeout": "30s",
        "report_interval": "1s",
        "shutdown_timeout": "10m",
        "shutdown_resolve_timeout": "30s",
        "shutdown_report_timeout": "30s",
        "state_dir": str(tmp_path / "state"),
        "labels": ["debian:host"],
        "job_timeout": "3h",
        "envs": {},
    }
    assert data["metrics"] == {"listen": "[::1]:0", "enabled": True}
    a = data["connections"]["a"]
    assert a["token"] == "<redacted> (from env:TOK_A)"
    assert (a["weight"], a["min_slots"], a["max_slots"]) == (1.0, 0, 4)
    assert a["labels"] == ["debian:host"]
    c = data["connections"]["with.dots"]
    assert c["token"] == "<redacted> (from config)"
    assert (c["url"], c["fetch_interval"], c["insecure"]) == ("http://c.example", "1m30s", True)
    assert list(data["connections"]) == ["a", "b", "with.dots"]
    assert "# ca_file: not set" in text
    # What is rendered reads back to the same settings (apart from the token).
    again = parse_config(
        {**data, "connections": {n: _unredact(t) for n, t in data["connections"].items()}},
        source=tmp_path / "config.toml",
        env=ENV,
    )
    assert again.runner == cfg.runner
    assert again.metrics == cfg.metrics
    assert [_sans_token(x) for x in again.connections] == [_sans_token(x) for x in cfg.connections]


def _unredact(table: Data) -> Data:
    out = dict(table)
    del out["token"]
    out["token"] = "t"
    return out


def _sans_token(c: ConnectionSettings) -> ConnectionSettings:
    return attrs.evolve(c, token="", token_source="")


def test_render_shows_disabled_metrics_and_ca_file(tmp_path: Path) -> None:
    write(tmp_path / "ca.pem", "pem")
    d = base()
    d["metrics"] = {"listen": ""}
    conn(d)["ca_file"] = "ca.pem"
    data = tomllib.loads(render_config(parse(d, tmp_path)))
    assert data["metrics"]["enabled"] is False
    assert data["connections"]["a"]["ca_file"] == str(tmp_path / "ca.pem")


@pytest.mark.parametrize(
    ("mode", "who"),
    [
        (0o600, None),
        (0o400, None),
        (0o640, "group"),
        (0o604, "others"),
        (0o644, "group and others"),
    ],
)
def test_token_file_warning(tmp_path: Path, mode: int, who: str | None) -> None:
    path = write(tmp_path / "a.token", "t", mode=mode)
    warning = token_file_warning(path)
    if who is None:
        assert warning is None
    else:
        assert warning == (
            f"token file {path} is readable by {who} (mode {mode:04o}); "
            f"restrict it with: chmod 600 {path}"
        )


def test_token_file_warning_for_a_missing_file_is_none(tmp_path: Path) -> None:
    assert token_file_warning(tmp_path / "absent") is None


def test_config_warnings_collects_readable_token_files_and_insecure_tls(tmp_path: Path) -> None:
    write(tmp_path / "a.token", "t", mode=0o644)
    d = two()
    del conn(d)["token_env"]
    conn(d)["token_file"] = "a.token"
    conn(d, "b")["insecure"] = True
    warnings = config_warnings(parse(d, tmp_path))
    assert len(warnings) == 2
    assert warnings[0].startswith(f"connections.a: token file {tmp_path / 'a.token'} is readable")
    assert warnings[1] == (
        "connections.b: insecure = true: TLS certificates of https://b.example are not verified"
    )
    assert config_warnings(parse(base(), tmp_path)) == []


def test_errors_are_not_chained_to_internal_exceptions(tmp_path: Path) -> None:
    """The CLI prints str(error); a chained KeyError/ValueError would only add noise."""
    d = base()
    d["runner"]["fetch_interval"] = "nope"
    with pytest.raises(ConfigError) as info:
        parse(d, tmp_path)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://forgejo.example", True),
        ("http://10.0.0.5:3000", True),
        ("http://127.0.0.1:3000", False),
        ("http://localhost:3000", False),
        ("http://[::1]:3000", False),
        ("https://forgejo.example", False),
    ],
)
def test_plain_http_to_another_host_is_warned(tmp_path: Path, url: str, warned: bool) -> None:
    d = base()
    conn(d)["url"] = url
    warnings = [w for w in config_warnings(parse(d, tmp_path)) if "plain HTTP" in w]
    assert bool(warnings) is warned
    assert all(TOKEN not in w for w in warnings)


def test_fetch_interval_max_defaults_inherits_and_is_checked(tmp_path: Path) -> None:
    cfg = parse(two(), tmp_path)
    assert cfg.runner.fetch_interval_max is None
    assert [c.poll_ceiling for c in cfg.connections] == [20.0, 20.0]  # 10 x fetch_interval

    d = two()
    d["runner"].update(fetch_interval_max="30s")
    conn(d, "b").update(fetch_interval="1m", fetch_interval_max="5m")
    a, b = parse(d, tmp_path).connections
    assert (a.fetch_interval_max, a.poll_ceiling) == (30.0, 30.0)
    assert (b.fetch_interval_max, b.poll_ceiling) == (300.0, 300.0)

    d = two()
    d["runner"].update(fetch_interval_max="30s")
    conn(d, "b").update(fetch_interval="1m")  # the inherited ceiling is below its interval
    assert parse(d, tmp_path).connections[1].poll_ceiling == 60.0  # fixed interval

    d = base()
    d["runner"].update(fetch_interval="5s", fetch_interval_max="2s")
    assert error(d, tmp_path) == (
        'runner.fetch_interval_max: expected a duration at least fetch_interval (5s), '
        'got a string ("2s")')
    d = base()
    conn(d).update(fetch_interval_max="1s")
    assert error(d, tmp_path) == (
        'connections.a.fetch_interval_max: expected a duration at least fetch_interval '
        '(2s), got a string ("1s")')
