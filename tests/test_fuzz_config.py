"""Fuzzing the configuration: a valid file with one generated edit, or TOML text broken.

Every edit is one of: a key set to a bad value of any TOML type (huge integers, nan,
dates, arrays, inline tables...), a token pasted into a key that is not a token key, an
unknown or misspelt key, a key deleted, a table replaced by a scalar, a connection
renamed. ``parse_config`` (and ``load_config`` on the written file) must then return a
``Config`` or raise ``ConfigError`` whose message starts with the file and names the
edited key (or the key the edit made wrong: ``capacity`` 2 makes ``max_slots`` 3
wrong), never another exception, and never contains a token.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import os
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.config import _NAME_RE, Config, _toml_key, load_config, parse_config
from scheduler.errors import ConfigError
from tests.support.config import toml_pairs
from tests.support.profiles import examples
from tests.support.strategies import seeds

# A generated body can be megabytes: hypothesis may warn that its repr is large, which
# the suite's "warnings are errors" would turn into a failure of a passing example.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning")


T_CONFIG = "0123456789abcdef0123456789abcdef01234567"
T_ENV = "fedcba9876543210fedcba9876543210fedcba98"
T_FILE = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
TOKENS = (T_CONFIG, T_ENV, T_FILE)
ENV = {"FORGEJO_TOKEN_B": T_ENV, "EMPTY": "", "SPACEY": "a b c", "OTHER": "x" * 50}

FAST = settings(deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzzconfig")
    (root / "token").write_text(T_FILE + "\n")
    os.chmod(root / "token", 0o600)
    (root / "open.token").write_text(T_FILE)
    os.chmod(root / "open.token", 0o644)
    (root / "two-lines.token").write_text(T_FILE + "\nsecond\n")
    (root / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (root / "a-file").write_text("x")
    (root / "dir").mkdir()
    return root


def base(home: Path) -> dict[str, Any]:
    return {
        "runner": {
            "capacity": 4, "fetch_interval": "2s", "fetch_timeout": "30s",
            "report_interval": "1s", "shutdown_timeout": "10m",
            "state_dir": str(home / "state"), "labels": ["debian:host", "sim"],
        },
        "metrics": {"listen": "127.0.0.1:9464", "enabled": True},
        "connections": {
            "a": {"url": "https://a.example", "uuid": "uuid-a", "token": T_CONFIG,
                  "labels": ["x:host"], "weight": 2, "min_slots": 1, "max_slots": 3,
                  "fetch_interval": "5s", "ca_file": str(home / "ca.pem")},
            "b": {"url": "http://b.example:3000/sub", "uuid": "uuid-b",
                  "token_env": "FORGEJO_TOKEN_B", "insecure": False},
            "c": {"url": "https://c.example", "uuid": "uuid-c", "token_file": str(home / "token"),
                  "weight": 0.5},
        },
    }


KNOWN_KEYS = (
    "capacity", "fetch_interval", "fetch_timeout", "report_interval", "shutdown_timeout",
    "state_dir", "labels", "listen", "enabled", "url", "uuid", "token_file", "token_env",
    "token", "weight", "min_slots", "max_slots", "ca_file", "insecure", "runner", "metrics",
    "connections",
)  # fmt: skip
NEAR_MISSES = ("capacty", "max_slot", "token_files", "weigth", "fetch-interval", "Capacity",
               "labels ", "url2", "min_slots_", "insecur", "listen_address")


def bad_values(home: Path) -> st.SearchStrategy[Any]:
    """Any TOML value, biased to the edges of what the keys accept."""
    return st.one_of(
        st.sampled_from([0, -1, 1, 2, 3, 5, 1000, 1001, 2**63 - 1, -(2**63), 10**400,
                         int("9" * 4000)]),
        st.integers(),
        st.floats(),
        st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 0.5, 4.0]),
        st.booleans(),
        st.sampled_from(["", " ", "2s", "0s", "1h2m3.5s", "-1s", "1x", "1m1m", "10 m", "ms",
                         "https://", "ftp://x", "http://u:p@host", "http://h:99999",
                         "https://h?token=1", "http://h#f", "[::1]:9464", "[::1]", "host:",
                         ":9464", "256.1.1.1:80", "0.0.0.0:0", "FORGEJO_TOKEN_B", "EMPTY",
                         "SPACEY", "NOT_SET", "1BAD", "a b", "x" * 300, "\x00", "é",
                         str(home / "a-file"), str(home / "dir"), str(home / "missing"),
                         str(home / "open.token"), str(home / "two-lines.token"),
                         "relative/path", "~/x"]),
        st.text(max_size=20),
        st.datetimes().map(lambda d: d.replace(microsecond=0)),
        st.datetimes(timezones=st.just(dt.UTC)).map(lambda d: d.replace(microsecond=0)),
        st.dates(),
        st.times().map(lambda t: t.replace(microsecond=0)),
        st.lists(st.one_of(st.text(max_size=8), st.integers(), st.booleans()), max_size=3),
        st.dictionaries(st.sampled_from(KNOWN_KEYS), st.integers(0, 3), max_size=2),
        st.sampled_from(TOKENS),
    )


def paths(doc: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((*prefix, k))
            out += paths(v, (*prefix, k))
    return out


def tables(doc: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix] if isinstance(doc, dict) else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += tables(v, (*prefix, k))
    return out


def at(doc: Any, path: tuple[str, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def dotted(path: tuple[str, ...]) -> str:
    """A key path as the messages show it: segments that are not bare keys are quoted
    as in TOML (a valid connection name stays as written), tokens are hidden."""
    parts = []
    for i, seg in enumerate(path):
        plain = i == 1 and path[0] == "connections" and _NAME_RE.fullmatch(seg)
        parts.append(seg if plain else _toml_key(seg))
    return re.sub(r"[0-9A-Fa-f]{32,}", "<hidden, looks like a token>", ".".join(parts))


def edit(doc: dict[str, Any], choice: Any, value: Any, op: str) -> str:
    """Apply one edit; returns the dotted key it touched. ``choice`` picks among candidates."""
    if op in ("value", "token", "delete"):
        candidates = paths(doc)
        path = candidates[choice % len(candidates)]
        parent = at(doc, path[:-1])
        if op == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
        return dotted(path)
    if op == "unknown":
        candidates = tables(doc)
        path = candidates[choice % len(candidates)]
        key = value if isinstance(value, str) else str(value)
        at(doc, path)[key] = 1
        return dotted((*path, key))
    # rename a connection
    conns = doc["connections"]
    old = sorted(conns)[choice % len(conns)]
    new = value if isinstance(value, str) else str(value)
    conns[new] = conns.pop(old)
    return dotted(("connections", new))


def check(outcome: Config | ConfigError, source: Path, touched: str) -> None:
    if isinstance(outcome, Config):
        return
    msg = str(outcome)
    for token in TOKENS:
        assert token not in msg, msg
    assert msg.startswith(f"{source}: "), msg
    rest = msg[len(f"{source}: "):]
    if rest.startswith("invalid TOML"):
        return
    key = rest.split(": ", 1)[0]
    assert key, msg
    named = rest.startswith((f"{touched}: ", f"{touched}.", f"{touched}[")) or touched.startswith(
        key + ".")
    if not named and (touched == "runner" or touched.startswith("runner.")):
        # Settings bounded by or inherited from [runner] are reported where they bite.
        named = key.startswith("connections")
    if not named and touched.startswith("connections."):
        # A clash with another connection is reported at the second one, naming the first.
        name = touched.removeprefix("connections.").split(".")[0]
        named = key.startswith("connections") and name in rest
    assert named, f"edit of {touched!r} gave: {msg}"


def parse(doc: dict[str, Any], source: Path) -> Config | ConfigError:
    try:
        return parse_config(doc, source=source, env=ENV)
    except ConfigError as exc:
        return exc


def test_the_base_is_valid(home: Path) -> None:
    cfg = parse_config(base(home), source=home / "config.toml", env=ENV)
    assert [c.token for c in cfg.connections] == [T_CONFIG, T_ENV, T_FILE]


OPS = ("value", "value", "value", "token", "unknown", "delete", "rename")


@settings(FAST, max_examples=examples(300))
@given(data=st.data())
def test_one_generated_edit_gives_a_config_or_a_config_error_naming_the_key(
    home: Path, data: st.DataObject,
) -> None:
    doc = base(home)
    op = data.draw(st.sampled_from(OPS), label="op")
    value: Any
    if op == "token":
        value = data.draw(st.sampled_from(TOKENS))
    elif op in ("unknown", "rename"):
        value = data.draw(st.one_of(st.sampled_from(NEAR_MISSES + KNOWN_KEYS + TOKENS),
                                    st.text(max_size=70)), label="key")
    else:
        value = data.draw(bad_values(home), label="value")
    touched = edit(doc, data.draw(st.integers(0, 200), label="where"), value, op)
    check(parse(doc, home / "config.toml"), home / "config.toml", touched)


SEEDED_VALUES: tuple[Any, ...] = (
    0, -1, 1, 3, 1001, 2**63, 10**400, math.nan, math.inf, -0.0, 0.5, True, False, "", " ",
    "2s", "-1s", "1x", "https://", "http://u:p@h", "[::1]:1", ":1", "NOT_SET", "EMPTY",
    "SPACEY", "a b", "x" * 300, "\x00", [], [1, "a"], ["", "a"], ["a:b", "a:c"], {},
    {"capacity": 1}, dt.date(2024, 1, 1), dt.time(1, 2), dt.datetime(2024, 1, 1), *TOKENS,
)


@settings(FAST, max_examples=examples(1800))
@given(seed=seeds)
def test_seeded_edits_give_a_config_or_a_config_error_naming_the_key(
    home: Path, seed: int,
) -> None:
    r = random.Random(seed)
    doc = base(home)
    touched = ""
    for _ in range(1 if r.random() < 0.8 else 2):  # sometimes two edits: any key may be named
        op = r.choice(OPS)
        value: Any = r.choice(SEEDED_VALUES)
        if op in ("unknown", "rename"):
            value = r.choice(NEAR_MISSES + KNOWN_KEYS + TOKENS + ("", "a b", "A", "-x"))
        elif op == "value" and r.random() < 0.3:
            value = r.choice([str(home / "a-file"), str(home / "dir"), str(home / "open.token"),
                              str(home / "two-lines.token"), str(home / "nope")])
        try:
            step = edit(doc, r.randrange(200), copy.deepcopy(value), op)
        except (KeyError, TypeError, IndexError, AttributeError, ZeroDivisionError):
            break  # the first edit removed what the second one aimed at
        touched = step if not touched else ""
    outcome = parse(doc, home / "config.toml")
    if touched:
        check(outcome, home / "config.toml", touched)
    elif isinstance(outcome, ConfigError):
        assert not any(t in str(outcome) for t in TOKENS), outcome


# --- through real TOML files ----------------------------------------------------------


def toml_text(doc: dict[str, Any]) -> str:
    """Every key at the top level, each table inline."""
    return "\n".join(toml_pairs(doc)) + "\n"


@settings(FAST, max_examples=examples(250))
@given(seed=seeds, breakage=st.sampled_from(["none", "none", "bytes", "truncate", "deep",
                                              "hugeint", "dup"]))
def test_generated_files_load_or_fail_with_a_config_error(
    home: Path, tmp_path_factory: pytest.TempPathFactory, seed: int, breakage: str,
) -> None:
    r = random.Random(seed)
    doc = base(home)
    op = r.choice(OPS)
    value = r.choice(SEEDED_VALUES if op in ("value", "token", "delete") else
                     NEAR_MISSES + KNOWN_KEYS)
    touched = edit(doc, r.randrange(200), copy.deepcopy(value), op)
    text = toml_text(doc).encode()
    if breakage == "bytes":
        at_ = r.randrange(len(text))
        junk = r.choice([b"\xff", b"\x00", b"=", b"[", b'"', b"\n[[x]]\n"])
        text = text[:at_] + junk + text[at_:]
    elif breakage == "truncate":
        text = text[: r.randrange(len(text))]
    elif breakage == "deep":
        text += b"x = " + b"[" * r.randint(1000, 50_000) + b"\n"
    elif breakage == "hugeint":
        text += b"y = " + b"9" * r.randint(4301, 6000) + b"\n"
    elif breakage == "dup":
        text += text.splitlines(keepends=True)[0]
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_bytes(text)
    try:
        outcome: Config | ConfigError = load_config(path, env=ENV)
    except ConfigError as exc:
        outcome = exc
    if breakage == "none":
        check(outcome, path, touched)
    else:
        assert not isinstance(outcome, Config) or breakage in ("bytes", "truncate")
        if isinstance(outcome, ConfigError):
            assert str(outcome).startswith(f"{path}: ")
            assert not any(t in str(outcome) for t in TOKENS)


@pytest.mark.parametrize(
    ("where", "value", "needle"),
    [
        (("runner", "fetch_interval"), 10**400, "runner.fetch_interval: expected a duration"),
        (("connections", "a", "weight"), 10**400, "connections.a.weight: expected a number"),
        (("connections", "a", "fetch_interval"), 10**400, "connections.a.fetch_interval"),
        (("runner", "capacity"), 10**400, "runner.capacity: expected at most 1000"),
        (("runner", "capacity"), 10**6, "runner.capacity: expected at most 1000"),
        (("connections", "b", "url"), T_CONFIG, "connections.b.url: expected an http"),
        (("metrics", "listen"), T_ENV, "metrics.listen: expected an address"),
        (("runner", "shutdown_timeout"), T_FILE, "runner.shutdown_timeout"),
        (("connections", "a", "ca_file"), T_CONFIG, "connections.a.ca_file: expected a PEM"),
        (("connections", "a", "url"), "https://[::1", "connections.a.url: expected an http"),
        (("runner", "k" * 100_000), 1, "runner.kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"),
    ],
)
def test_values_the_fuzzer_found(home: Path, where: tuple[str, ...], value: Any,
                                 needle: str) -> None:
    """Huge integers raised OverflowError; a capacity of 10**6 stalled the event loop
    while granting slot by slot; a token pasted into a plain key was echoed."""
    doc = base(home)
    at(doc, where[:-1])[where[-1]] = value
    with pytest.raises(ConfigError) as info:
        parse_config(doc, source=home / "config.toml", env=ENV)
    assert needle in str(info.value)
    assert not any(t in str(info.value) for t in TOKENS)
    assert len(str(info.value)) < 1000


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b"x = " + b"9" * 5000, "invalid TOML"),
        (b"x = " + b"[" * 5000, "invalid TOML"),
        (b"x = " + b"{a=" * 3000, "invalid TOML"),
    ],
)
def test_files_the_fuzzer_found(tmp_path: Path, text: bytes, needle: str) -> None:
    """tomllib raised ValueError (integers past 4300 digits) and RecursionError."""
    path = tmp_path / "config.toml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(path)
