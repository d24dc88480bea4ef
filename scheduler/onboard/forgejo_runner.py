"""Reading forgejo-runner's files: ``config.yml`` (including ``server.connections``, runner
12.7+) and the ``.runner`` registration file, into what ``import-config`` needs.

Read the way forgejo-runner reads them (``internal/pkg/config/config.go`` and
``registration.go``; docs/onboarding.md has the table with lines): durations are Go
``time.ParseDuration`` strings, ``runner.labels`` is the default for connections without
their own and replaces a ``.runner`` file's labels, ``runner.insecure`` applies to every
connection, a ``.runner`` file and ``server.connections`` exclude each other, and
connections on codeberg.org fetch at most every 30 s. What has no counterpart here is
listed, key by key, with the reason; a value is never shown (some are secrets).
"""

from __future__ import annotations

import json
import math
import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from scheduler.config import _NAME_RE
from scheduler.durations import format_duration
from scheduler.errors import OnboardError, SecretFileError
from scheduler.executor.workflow import load_yaml
from scheduler.secretfile import read_secret_file

#: forgejo-runner enforces this minimum fetch interval for connections to Codeberg.
CODEBERG_MIN_FETCH_INTERVAL = 30.0

# Why a section or key has no counterpart; None = handled.
_SECTION_REASONS = {
    "log": "forgejo-scheduler logs at [logging] level or --log-level (default info) "
           "and sends job logs unfiltered",
    "cache": "forgejo-scheduler runs no actions cache server or proxy",
    "container": "forgejo-scheduler runs jobs on the host, not in containers",
    "host": "work directories are under runner.state_dir/work",
    "kubernetes": "forgejo-scheduler has no Kubernetes backend",
    "plugins": "forgejo-scheduler has no backend plugins",
    "pluginsv2": "forgejo-scheduler has no backend plugins",
}
_RUNNER_REASONS = {
    "report_retry": "no setting: final log uploads are retried until acknowledged",
}
_RUNNER_MAPPED = (
    "file",
    "capacity",
    "shutdown_timeout",
    "insecure",
    "fetch_timeout",
    "fetch_interval",
    "report_interval",
    "labels",
    *("timeout", "envs", "env_file"),  # to job_timeout, envs, env_file
)
_CONNECTION_KEYS = ("url", "uuid", "token", "token_url", "labels", "fetch_interval")


@attrs.frozen(kw_only=True)
class SourceConnection:
    """One connection as forgejo-runner would use it."""

    name: str
    origin: str  # where it came from, for messages: "server.connections.x" or a path
    url: str
    uuid: str
    token: str | None = attrs.field(default=None, repr=False)  # inline: to be written
    token_file: Path | None = None  # already in a file (token_url: file:...)
    labels: tuple[str, ...] | None = None
    fetch_interval: float | None = None


@attrs.frozen(kw_only=True)
class Source:
    files: tuple[Path, ...]
    runner: dict[str, Any]  # our [runner] keys, in our spelling
    insecure: bool
    connections: tuple[SourceConnection, ...]
    dropped: tuple[str, ...]  # "key: reason"
    empty: tuple[str, ...]  # keys present with an empty value: nothing to carry
    notes: tuple[str, ...]


# --- Go durations ------------------------------------------------------------------------

_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def go_duration(value: object, where: str) -> float:
    """Seconds from a Go ``time.ParseDuration`` string ("1h30m", "2.5s", "0"); yaml.v3
    refuses anything else for a ``time.Duration`` field, and so does this."""
    if not isinstance(value, str) or isinstance(value, bool):
        raise OnboardError(
            f'{where}: expected a Go duration string like "2s" or "1m30s", '
            f"got {type(value).__name__} (forgejo-runner refuses it too)"
        )
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    total, pos = 0.0, 0
    while pos < len(body):
        m = _GO_PART.match(body, pos)
        if m is None:
            break
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise OnboardError(f'{where}: {value!r} is not a Go duration (like "2s", "1m30s")')
    return sign * total


def _duration_text(seconds: float) -> str:
    return format_duration(seconds)


# --- config.yml --------------------------------------------------------------------------


def read_yaml_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OnboardError(f"{path}: forgejo-runner config file not found") from None
    except UnicodeDecodeError:
        raise OnboardError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise OnboardError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise OnboardError(f"{path}: invalid YAML{at}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise OnboardError(f"{path}: expected a YAML mapping (log:, runner:, server:...)")
    return data


def _is_empty(value: object) -> bool:
    return value is None or value == "" or value == [] or value == {}


def read_source(
    config_yml: Path | None, runner_file: Path | None, connection_name: str | None = None
) -> Source:
    """Everything forgejo-runner would run with, from ``config_yml`` and/or ``runner_file``.

    Without ``runner_file``, a config without ``server.connections`` takes its
    registration from ``runner.file`` (default ``.runner``), which forgejo-runner opens
    relative to its working directory: here, relative to the config file's directory.
    """
    data = read_yaml_config(config_yml) if config_yml is not None else {}
    where = str(config_yml)
    dropped: list[str] = []
    empty: list[str] = []
    notes: list[str] = []

    def drop(key: str, value: object, reason: str) -> None:
        (empty if _is_empty(value) else dropped).append(
            key if _is_empty(value) else f"{key}: {reason}"
        )

    for section, value in data.items():
        if section in ("runner", "server"):
            continue
        reason = _SECTION_REASONS.get(str(section), "unknown to forgejo-runner (it ignores it)")
        if isinstance(value, dict) and value:
            for key, sub in value.items():
                drop(f"{section}.{key}", sub, reason)
        else:
            drop(str(section), value, reason)

    runner_yml = data.get("runner") or {}
    if not isinstance(runner_yml, dict):
        raise OnboardError(f"{where}: runner: expected a mapping")
    for key, value in runner_yml.items():
        if key not in _RUNNER_MAPPED:
            drop(
                f"runner.{key}",
                value,
                _RUNNER_REASONS.get(key, "unknown to forgejo-runner (it ignores it)"),
            )
    base = config_yml.parent if config_yml is not None else Path(".")
    runner, insecure = _runner_settings(runner_yml, where, notes)
    runner.update(_job_settings(runner_yml, where, base, dropped, notes))

    server = data.get("server") or {}
    if not isinstance(server, dict):
        raise OnboardError(f"{where}: server: expected a mapping")
    for key, value in server.items():
        if key != "connections":
            drop(f"server.{key}", value, "unknown to forgejo-runner (it ignores it)")
    conns_yml = server.get("connections") or {}
    if not isinstance(conns_yml, dict):
        raise OnboardError(f"{where}: server.connections: expected a mapping of name: settings")
    connections = [
        _yaml_connection(str(name), value, where, base, dropped)
        for name, value in conns_yml.items()
    ]
    files = [config_yml] if config_yml is not None else []

    if connections and runner_file is not None:
        raise OnboardError(
            f"{where} declares server.connections and {runner_file} is a registration too; "
            "forgejo-runner refuses this combination (only one may provide connections): "
            "leave out --runner-file or remove server.connections"
        )
    if not connections:
        if runner_file is None:
            raw = runner_yml.get("file") or ".runner"
            runner_file = base / str(raw)
            if not runner_file.exists():
                raise OnboardError(
                    f"{where}: no server.connections, and no registration file at "
                    f"{runner_file} (runner.file); pass --runner-file PATH"
                )
        registration = _registration(runner_file, connection_name)
        files.append(runner_file)
        if runner.get("labels") and registration.labels:
            notes.append(
                f"{runner_file}: its labels are replaced by runner.labels, as forgejo-runner does"
            )
            registration = attrs.evolve(registration, labels=None)
        connections = [registration]
    elif connection_name is not None:
        raise OnboardError(
            "--connection names the connection of a .runner file; "
            f"{where} names its connections in server.connections"
        )

    connections = _codeberg_minimum(connections, runner, notes)
    seen: dict[str, str] = {}
    for c in connections:
        if c.name.casefold() in seen:
            raise OnboardError(
                f"{c.origin} and {seen[c.name.casefold()]} both become "
                f"connection {c.name!r}; rename one"
            )
        seen[c.name.casefold()] = c.origin
    return Source(
        files=tuple(files),
        runner=runner,
        insecure=insecure,
        connections=tuple(connections),
        dropped=tuple(dropped),
        empty=tuple(empty),
        notes=tuple(notes),
    )


def _runner_settings(
    t: Mapping[str, Any], where: str, notes: list[str]
) -> tuple[dict[str, Any], bool]:
    out: dict[str, Any] = {}
    capacity = t.get("capacity")
    if capacity is not None:
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise OnboardError(f"{where}: runner.capacity: expected an integer")
        if capacity > 0:
            out["capacity"] = capacity
        else:
            notes.append(f"runner.capacity {capacity} means 1 in forgejo-runner: capacity = 1")
    for key in ("fetch_interval", "fetch_timeout", "report_interval"):
        if not _is_empty(t.get(key)):
            seconds = go_duration(t[key], f"{where}: runner.{key}")
            if seconds > 0:
                out[key] = _duration_text(seconds)
            else:  # forgejo-runner ignores 0 and negative values: its default applies
                notes.append(
                    f"runner.{key} {t[key]!r} is ignored by forgejo-runner: left "
                    "at forgejo-scheduler's default"
                )
    if _is_empty(t.get("shutdown_timeout")):
        notes.append(
            "runner.shutdown_timeout is not set, which in forgejo-runner cancels "
            'jobs at once on shutdown; forgejo-scheduler waits "10m" by default'
        )
    else:
        seconds = go_duration(t["shutdown_timeout"], f"{where}: runner.shutdown_timeout")
        out["shutdown_timeout"] = _duration_text(max(seconds, 0.0))
    labels = t.get("labels")
    if not _is_empty(labels):
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise OnboardError(f"{where}: runner.labels: expected a list of strings")
        out["labels"] = list(labels)
    insecure = t.get("insecure", False)
    if not isinstance(insecure, bool):
        raise OnboardError(f"{where}: runner.insecure: expected true or false")
    return out, insecure


def _job_settings(
    t: Mapping[str, Any], where: str, base: Path, dropped: list[str], notes: list[str]
) -> dict[str, Any]:
    """``runner.timeout``, ``runner.envs`` and ``runner.env_file`` as forgejo-runner reads
    them (config.go: a timeout of 0 or less means 3h; envs, then the env file over them;
    a missing env file is skipped with a warning there)."""
    out: dict[str, Any] = {}
    if not _is_empty(t.get("timeout")):
        seconds = go_duration(t["timeout"], f"{where}: runner.timeout")
        if seconds > 0:
            out["job_timeout"] = _duration_text(seconds)
        else:
            notes.append(
                f"runner.timeout {t['timeout']!r} means 3h in forgejo-runner: job_timeout "
                'left at its default "3h"'
            )
    envs = t.get("envs")
    if not _is_empty(envs):
        if not isinstance(envs, dict):
            raise OnboardError(f"{where}: runner.envs: expected a mapping of NAME: value")
        carried: dict[str, str] = {}
        for name, value in envs.items():
            if not isinstance(name, str) or not _ENV_NAME_RE.fullmatch(name):
                dropped.append(
                    f"runner.envs.{name}: not a variable name here (letters, digits, _)"
                )
            elif isinstance(value, dict | list):
                raise OnboardError(f"{where}: runner.envs.{name}: expected a string")
            else:
                carried[name] = _go_string(value)
        if carried:
            out["envs"] = carried
    raw = t.get("env_file")
    if not _is_empty(raw):
        if not isinstance(raw, str):
            raise OnboardError(f"{where}: runner.env_file: expected a path")
        # forgejo-runner opens it relative to its working directory: here, config.yml's.
        path = Path(os.path.abspath(base / raw))
        if path.is_file():
            out["env_file"] = str(path)
        else:
            what = "is not a file" if path.exists() else "does not exist"
            dropped.append(
                f"runner.env_file: {path} {what} (forgejo-runner skips a missing env file; "
                "forgejo-scheduler would refuse it)"
            )
    return out


_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _go_string(value: object) -> str:
    """A YAML scalar as yaml.v3 puts it into a Go ``string``: ``true``, ``3``, ``""``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _yaml_connection(
    name: str, t: object, where: str, base: Path, dropped: list[str]
) -> SourceConnection:
    prefix = f"server.connections.{name}"
    if not isinstance(t, dict):
        raise OnboardError(f"{where}: {prefix}: expected a mapping (url, uuid, token...)")
    for key in t:
        if key not in _CONNECTION_KEYS:
            dropped.append(f"{prefix}.{key}: unknown to forgejo-runner (it ignores it)")

    def text(key: str) -> str:
        value = t.get(key)
        if _is_empty(value):
            raise OnboardError(f"{where}: {prefix}.{key}: missing (forgejo-runner requires it)")
        if not isinstance(value, str):
            raise OnboardError(f"{where}: {prefix}.{key}: expected a string")
        return value.strip()

    has_token, has_url = not _is_empty(t.get("token")), not _is_empty(t.get("token_url"))
    if has_token == has_url:
        raise OnboardError(f"{where}: {prefix}: expected exactly one of token and token_url")
    token = text("token") if has_token else None
    token_file = (
        _token_url_path(text("token_url"), f"{where}: {prefix}.token_url", base)
        if has_url
        else None
    )
    labels = t.get("labels")
    if not _is_empty(labels) and (
        not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)
    ):
        raise OnboardError(f"{where}: {prefix}.labels: expected a list of strings")
    interval = None
    if not _is_empty(t.get("fetch_interval")):
        interval = go_duration(t["fetch_interval"], f"{where}: {prefix}.fetch_interval")
        interval = interval if interval > 0 else None
    return SourceConnection(
        name=_our_name(name, prefix, where),
        origin=prefix,
        url=text("url"),
        uuid=text("uuid"),
        token=token,
        token_file=token_file,
        labels=tuple(labels) if labels else None,
        fetch_interval=interval,
    )


def _token_url_path(url: str, where: str, base: Path) -> Path:
    """forgejo-runner's ``ResolveSecretURL``: only ``file:`` URLs, with one placeholder
    ``$CREDENTIALS_DIRECTORY`` and any host ignored."""
    if not url.startswith("file:"):
        raise OnboardError(f"{where}: only file: URLs are supported (as in forgejo-runner)")
    if "$CREDENTIALS_DIRECTORY" in url:
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if creds is None:
            raise OnboardError(
                f"{where}: uses $CREDENTIALS_DIRECTORY (systemd credentials), which is not "
                "set here and which token_file does not expand; run with "
                "CREDENTIALS_DIRECTORY=<the unit's credentials directory> or point token_url "
                "at the file itself"
            )
        url = url.replace("$CREDENTIALS_DIRECTORY", creds, 1)
    parts = urllib.parse.urlsplit(url)
    raw = urllib.parse.unquote(parts.path)
    if not raw:
        raise OnboardError(f"{where}: no file path in the URL")
    return Path(os.path.abspath(base / raw))


def _our_name(name: str, origin: str, where: str) -> str:
    if _NAME_RE.fullmatch(name):
        return name
    fixed = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).lstrip("_.-")[:64]
    if not fixed:
        raise OnboardError(
            f"{where}: {origin}: the name cannot be made a connection name "
            "(letters, digits, '_', '.', '-')"
        )
    return fixed


def _registration(path: Path, connection_name: str | None) -> SourceConnection:
    """forgejo-runner's ``.runner`` JSON (``config.Registration``)."""
    try:
        data = json.loads(read_secret_file(path))
    except SecretFileError as exc:
        raise OnboardError(f"registration file {exc}") from None
    except ValueError as exc:  # the message may quote the file: keep only where
        at = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise OnboardError(f"{path}: not a forgejo-runner .runner file: invalid JSON{at}") from None
    if not isinstance(data, dict):
        raise OnboardError(f"{path}: not a forgejo-runner .runner file (expected a JSON object)")

    def text(key: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise OnboardError(f"{path}: {key}: missing or not a string")
        return value.strip()

    address = text("address")
    labels = data.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise OnboardError(f"{path}: labels: expected a list of strings")
    if connection_name is not None:
        name = connection_name
    else:
        raw_name = data.get("name") if isinstance(data.get("name"), str) else ""
        host = urllib.parse.urlsplit(address).hostname or ""
        name = str(raw_name or host)
    return SourceConnection(
        name=_our_name(name, "the runner name", str(path)),
        origin=str(path),
        url=address,
        uuid=text("uuid"),
        token=text("token"),
        labels=tuple(labels) or None,
    )


def _codeberg_minimum(
    conns: list[SourceConnection], runner: Mapping[str, Any], notes: list[str]
) -> list[SourceConnection]:
    default = 2.0
    if "fetch_interval" in runner:
        default = go_duration(runner["fetch_interval"], "runner.fetch_interval")  # ours ⊂ Go's
    out = []
    for c in conns:
        host = (urllib.parse.urlsplit(c.url).hostname or "").lower()
        interval = c.fetch_interval if c.fetch_interval is not None else default
        if (
            host.endswith("codeberg.org")
            and interval < CODEBERG_MIN_FETCH_INTERVAL
            and not math.isclose(interval, CODEBERG_MIN_FETCH_INTERVAL)
        ):
            notes.append(
                f"{c.origin}: fetch_interval raised to 30s for Codeberg, as forgejo-runner does"
            )
            c = attrs.evolve(c, fetch_interval=CODEBERG_MIN_FETCH_INTERVAL)
        out.append(c)
    return out
