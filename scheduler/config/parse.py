"""Reading and validating the TOML file into :mod:`scheduler.config.values`."""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import stat
import string
import tomllib
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from scheduler.config.envfile import EnvFileError, parse_env_text
from scheduler.config.render import _toml_key
from scheduler.config.values import (
    Config,
    ConnectionSettings,
    LoggingSettings,
    MetricsSettings,
    RunnerSettings,
)
from scheduler.durations import describe_value, format_duration, parse_duration
from scheduler.errors import ConfigError, SecretFileError
from scheduler.executor.labels import label_problem, plan_labels
from scheduler.logs import FORMATS, LEVELS
from scheduler.secretfile import read_secret_file

_TOP_KEYS = ("runner", "metrics", "logging", "connections")
_RUNNER_KEYS = (
    "capacity",
    "fetch_interval",
    "fetch_interval_max",
    "fetch_timeout",
    "report_interval",
    "shutdown_timeout",
    "shutdown_resolve_timeout",
    "shutdown_report_timeout",
    "state_dir",
    "labels",
    *("job_timeout", "envs", "env_file"),  # job settings (issue 14)
)
_METRICS_KEYS = ("listen", "enabled")
_LOGGING_KEYS = ("level", "format")
_TOKEN_KEYS = ("token_file", "token_env", "token")
_CONNECTION_KEYS = (
    "url",
    "uuid",
    *_TOKEN_KEYS,
    "labels",
    "weight",
    "min_slots",
    "max_slots",
    "fetch_interval",
    "fetch_interval_max",
    "ca_file",
    "insecure",
    *("job_timeout", "envs", "env_file"),  # job settings (issue 14)
)
_SECTIONS: dict[str, tuple[str, ...]] = {
    "[runner]": _RUNNER_KEYS,
    "[metrics]": _METRICS_KEYS,
    "[logging]": _LOGGING_KEYS,
    "[connections.<name>]": _CONNECTION_KEYS,
}

#: Connection names become file names (state) and metric label values.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)

#: A token file longer than this is not a token file.

#: The largest ``runner.capacity``: far beyond what one host runs at once, small enough
#: that granting slot by slot stays a matter of milliseconds.
MAX_CAPACITY = 1000

_DEFAULT_RUNNER = RunnerSettings(capacity=1, state_dir=Path("state"))
_DEFAULT_METRICS = MetricsSettings()


# ---------------------------------------------------------------------------------------
# Loading


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate the TOML file at ``path``.

    ``env`` (default :data:`os.environ`) is where ``token_env`` variables are looked
    up; tests pass a dict. Relative paths in the file (``state_dir``, ``token_file``,
    ``ca_file``) are relative to the file's directory, not the working directory, so
    the service behaves the same whether started by systemd or by hand.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: expected a configuration file, got a directory") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot read configuration file: permission denied") from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read configuration file: {exc.strerror or exc}"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid TOML: not UTF-8 (byte {exc.start} of the file)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message carries "(at line N, column M)".
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except ValueError as exc:
        # tomllib lets int()'s own error through for an integer of more than 4300 digits.
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: arrays or tables nested too deeply") from None
    return parse_config(data, source=path, env=env)


def parse_config(
    data: Mapping[str, Any], *, source: Path, env: Mapping[str, str] | None = None
) -> Config:
    """Validate already-parsed TOML ``data``; ``source`` names it in messages and anchors
    relative paths (``Path("<memory>")`` anchors them at the working directory).

    Order matters for the operator: every structural problem (unknown keys, types,
    ranges, slot arithmetic, duplicates) is reported before secrets are read, so a
    typo is not hidden behind "environment variable X is not set".
    """
    p = _Parser(source, os.environ if env is None else env)
    return p.parse(data)


class _Parser:
    def __init__(self, source: Path, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env
        base = source.parent if source.name != "<memory>" else Path(".")
        self.base_dir = Path(os.path.abspath(base))
        self.runner_env: dict[str, str] = {}

    # -- errors -------------------------------------------------------------------------

    def fail(self, key: str, message: str) -> NoReturn:
        if len(key) > 120:  # a key (or connection name) from the file can be any length
            key = key[:117] + "..."
        raise ConfigError(f"{self.source}: {_hide_tokens(key)}: {_hide_tokens(message)}")

    def check_keys(self, table: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
        """Reject keys not in ``allowed``, suggesting a close spelling or the right table."""
        for key in table:
            if key in allowed:
                continue
            # Quoted as in TOML when not a bare key: `"" = 1` or `"a b" = 1` stay readable.
            shown = _toml_key(key)
            dotted = f"{prefix}.{shown}" if prefix else shown
            hint = ""
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            homes = [sec for sec, keys in _SECTIONS.items() if key in keys]
            if homes:  # a real key in the wrong table beats a look-alike in this one
                hint = f" ({key!r} belongs in {' or '.join(homes)})"
            elif close:
                hint = f" (did you mean {close[0]!r}?)"
            where = f"in [{prefix}]" if prefix else "at the top level"
            valid = ", ".join(allowed)
            self.fail(dotted, f"unknown key {where}{hint}; valid keys: {valid}")

    def table(self, data: Mapping[str, Any], key: str, dotted: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.fail(dotted, f"expected a table [{dotted}], got {describe_value(value)}")
        return value

    # -- scalar readers -----------------------------------------------------------------

    def integer(
        self,
        table: Mapping[str, Any],
        key: str,
        dotted: str,
        *,
        lo: int,
        hi: int | None,
        default: int | None,
        expected: str,
    ) -> int:
        if key not in table:
            if default is None:
                self.fail(dotted, f"missing; expected {expected}")
            return default
        value = table[key]
        # bool is an int subclass in Python; `capacity = true` must not mean 1.
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(dotted, f"expected {expected}, got {describe_value(value)}")
        if value < lo or (hi is not None and value > hi):
            self.fail(dotted, f"expected {expected}, got {value}")
        return value

    def number(self, table: Mapping[str, Any], key: str, dotted: str, *, default: float) -> float:
        if key not in table:
            return default
        value = table[key]
        expected = "a number greater than 0"
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(dotted, f"expected {expected}, got {describe_value(value)}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            self.fail(dotted, f"expected {expected}, got an integer too large for a number")
        if not math.isfinite(number) or number <= 0:
            self.fail(dotted, f"expected {expected}, got {value}")
        return number

    def boolean(self, table: Mapping[str, Any], key: str, dotted: str, *, default: bool) -> bool:
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, bool):
            self.fail(dotted, f"expected true or false, got {describe_value(value)}")
        return value

    def text(self, table: Mapping[str, Any], key: str, dotted: str, *, secret: bool = False) -> str:
        """A required non-blank string. ``secret`` keeps the value out of the message."""
        if key not in table:
            self.fail(dotted, "missing; expected a non-empty string")
        value = table[key]
        if not isinstance(value, str):
            got = _type_only(value) if secret else describe_value(value)
            self.fail(dotted, f"expected a non-empty string, got {got}")
        if not value.strip():
            self.fail(dotted, "expected a non-empty string, got an empty string")
        return value.strip()

    def duration(
        self,
        table: Mapping[str, Any],
        key: str,
        dotted: str,
        *,
        default: float,
        allow_zero: bool,
    ) -> float:
        if key not in table:
            return default
        try:
            seconds = parse_duration(table[key], where=dotted)
        except ValueError as exc:
            raise ConfigError(f"{self.source}: {_hide_tokens(str(exc))}") from None
        except OverflowError:  # an integer number of seconds beyond any float
            self.fail(dotted, "expected a duration, got an integer too large for one")
        if seconds == 0 and not allow_zero:
            got = describe_value(table[key])
            self.fail(dotted, f"expected a duration greater than 0, got {got}")
        return seconds

    def fetch_interval_max(
        self, table: Mapping[str, Any], prefix: str, fetch_interval: float,
        *, default: float | None,
    ) -> float | None:
        """The adaptive polling ceiling; set in a table, at least that table's fetch_interval."""
        if "fetch_interval_max" not in table:
            return default
        dotted = f"{prefix}.fetch_interval_max"
        seconds = self.duration(table, "fetch_interval_max", dotted, default=0.0,
                                allow_zero=False)
        if seconds < fetch_interval:
            self.fail(dotted, f"expected a duration at least fetch_interval "
                              f"({format_duration(fetch_interval)}), "
                              f"got {describe_value(table['fetch_interval_max'])}")
        return seconds

    def labels(self, table: Mapping[str, Any], key: str, dotted: str) -> tuple[str, ...] | None:
        """A label list, or None when absent (so connections can inherit runner.labels)."""
        if key not in table:
            return None
        value = table[key]
        expected = 'an array of label strings like ["debian:host"]'
        if not isinstance(value, list):
            self.fail(dotted, f"expected {expected}, got {describe_value(value)}")
        seen: dict[str, str] = {}
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.fail(
                    f"{dotted}[{i}]",
                    f"expected a non-empty label string, got {describe_value(item)}",
                )
            label = item.strip()
            if any(c.isspace() for c in label) or "," in label:
                self.fail(
                    f"{dotted}[{i}]",
                    f"expected a label without spaces or commas, got {describe_value(item)}",
                )
            problem = label_problem(label)
            if problem is not None:
                self.fail(f"{dotted}[{i}]", problem)
            # A job's runs-on matches the name before the first ":"; two labels with
            # the same name would make the schema/image it runs with ambiguous.
            name = label.split(":", 1)[0]
            if name in seen:
                self.fail(
                    f"{dotted}[{i}]",
                    f"duplicate label name {name!r} (already given as {seen[name]!r})",
                )
            seen[name] = label
            out.append(label)
        return tuple(out)

    def path(self, raw: str) -> Path:
        """A path from the file, relative ones anchored at the config file's directory."""
        return Path(os.path.abspath(self.base_dir / Path(raw).expanduser()))

    # -- sections -----------------------------------------------------------------------

    def parse(self, data: Mapping[str, Any]) -> Config:
        self.check_keys(data, _TOP_KEYS, "")
        if "runner" not in data:
            self.fail("runner", "missing table [runner] (it needs at least capacity = N)")
        runner = self.runner(self.table(data, "runner", "runner"))
        self.runner_env = self.env_layer(runner.envs, runner.env_file, "runner")
        metrics = self.metrics(self.table(data, "metrics", "metrics"))
        log_settings = self.logging(self.table(data, "logging", "logging"))
        conns = self.table(data, "connections", "connections")
        if not conns:
            self.fail(
                "connections",
                "no connections configured; add at least one "
                "[connections.<name>] table with url, uuid and a token",
            )
        drafts = [self.connection(name, value, runner) for name, value in conns.items()]
        self.cross_check(drafts, runner)
        connections = []
        for draft in drafts:
            token, token_source = self.token(draft["name"], conns[draft["name"]])
            connections.append(ConnectionSettings(**draft, token=token, token_source=token_source))
        return Config(
            source=self.source, runner=runner, metrics=metrics, connections=tuple(connections),
            logging=log_settings,
        )

    def runner(self, t: Mapping[str, Any]) -> RunnerSettings:
        self.check_keys(t, _RUNNER_KEYS, "runner")
        d = _DEFAULT_RUNNER
        capacity = self.integer(
            t,
            "capacity",
            "runner.capacity",
            lo=1,
            hi=None,
            default=None,
            expected="an integer >= 1 (the number of tasks run at once)",
        )
        if capacity > MAX_CAPACITY:
            # Slots are granted one by one: an absurd capacity would stall the event loop.
            self.fail(
                "runner.capacity",
                f"expected at most {MAX_CAPACITY} (the number of tasks run at once), "
                f"got {capacity}",
            )
        state_dir = self.path("state")
        if "state_dir" in t:
            state_dir = self.path(self.text(t, "state_dir", "runner.state_dir"))
        kind = _path_kind(state_dir)
        if kind not in ("missing", "directory"):
            what = kind if kind.startswith("unusable") else "not one"
            self.fail("runner.state_dir", f"expected a directory, but {state_dir} is {what}")

        def duration(key: str, *, allow_zero: bool = False) -> float:
            default: float = getattr(d, key)
            return self.duration(t, key, f"runner.{key}", default=default, allow_zero=allow_zero)

        fetch_interval = duration("fetch_interval")
        return RunnerSettings(
            capacity=capacity,
            fetch_interval=fetch_interval,
            fetch_interval_max=self.fetch_interval_max(
                t, "runner", fetch_interval, default=None),
            fetch_timeout=duration("fetch_timeout"),
            report_interval=duration("report_interval"),
            shutdown_timeout=duration("shutdown_timeout", allow_zero=True),
            shutdown_resolve_timeout=duration("shutdown_resolve_timeout", allow_zero=True),
            shutdown_report_timeout=duration("shutdown_report_timeout"),
            state_dir=state_dir,
            labels=self.labels(t, "labels", "runner.labels") or (),
            job_timeout=duration("job_timeout"),
            envs=self.envs(t, "runner"),
            env_file=self.env_file_path(t, "runner"),
        )

    def metrics(self, t: Mapping[str, Any]) -> MetricsSettings:
        self.check_keys(t, _METRICS_KEYS, "metrics")
        d = _DEFAULT_METRICS
        enabled = self.boolean(t, "enabled", "metrics.enabled", default=True)
        if "listen" not in t:
            return MetricsSettings(host=d.host, port=d.port, enabled=enabled)
        listen = t["listen"]
        expected = 'an address "host:port" (e.g. "127.0.0.1:9464", "[::1]:9464") or "" to disable'
        if not isinstance(listen, str):
            self.fail("metrics.listen", f"expected {expected}, got {describe_value(listen)}")
        if not listen.strip():
            return MetricsSettings(host=d.host, port=d.port, enabled=False)
        parsed = _parse_listen(listen.strip())
        if parsed is None:
            self.fail("metrics.listen", f"expected {expected}, got {describe_value(listen)}")
        host, port = parsed
        return MetricsSettings(host=host, port=port, enabled=enabled)

    def logging(self, t: Mapping[str, Any]) -> LoggingSettings:
        self.check_keys(t, _LOGGING_KEYS, "logging")

        def choice(key: str, allowed: tuple[str, ...], default: str) -> str:
            value = t.get(key, default)
            if not isinstance(value, str) or value.strip().lower() not in allowed:
                self.fail(f"logging.{key}",
                          f"expected one of {', '.join(allowed)}, got {describe_value(value)}")
            return value.strip().lower()

        d = LoggingSettings()
        return LoggingSettings(level=choice("level", tuple(LEVELS), d.level),
                               format=choice("format", FORMATS, d.format))

    def connection(self, name: str, t: object, runner: RunnerSettings) -> dict[str, Any]:
        """Everything about one connection except its token (read later, see parse_config)."""
        prefix = f"connections.{name if _NAME_RE.fullmatch(name) else _toml_key(name)}"
        if not isinstance(t, dict):
            self.fail(
                prefix,
                f"expected a table [connections.{name}] for a connection, got "
                f"{describe_value(t)} (is a key of a connection outside its table?)",
            )
        if not _NAME_RE.fullmatch(name):
            self.fail(
                prefix,
                "invalid connection name: expected 1-64 characters of letters, "
                "digits, '_', '.', '-', starting with a letter or digit (it is used as a "
                f"file name and a metrics label), got {describe_value(name)}",
            )
        self.check_keys(t, _CONNECTION_KEYS, prefix)

        url = self.url(t, f"{prefix}.url")
        uuid = self.text(t, "uuid", f"{prefix}.uuid")
        present = [k for k in _TOKEN_KEYS if k in t]
        if len(present) != 1:
            got = "none" if not present else " and ".join(present)
            self.fail(prefix, f"expected exactly one of token_file, token_env or token, got {got}")

        labels = self.labels(t, "labels", f"{prefix}.labels")
        if labels is None:
            labels = runner.labels
        if not labels:
            self.fail(
                f"{prefix}.labels",
                "no labels: set labels here or runner.labels "
                "(a runner without labels is offered no jobs)",
            )
        plan = plan_labels(labels)
        if not plan.declared:
            where = f"{prefix}.labels" if "labels" in t else "runner.labels"
            self.fail(
                where,
                f"no label of connection {name} can run here, so it would declare none "
                f"and be offered no jobs: {plan.describe_dropped()}; add a host label "
                'such as "debian:host"',
            )

        cap = runner.capacity
        max_slots = self.integer(
            t,
            "max_slots",
            f"{prefix}.max_slots",
            lo=1,
            hi=cap,
            default=cap,
            expected=f"an integer between 1 and capacity ({cap})",
        )
        min_slots = self.integer(
            t,
            "min_slots",
            f"{prefix}.min_slots",
            lo=0,
            hi=None,
            default=0,
            expected="an integer >= 0",
        )
        if min_slots > max_slots:
            self.fail(
                f"{prefix}.min_slots",
                f"expected an integer between 0 and max_slots ({max_slots}), got {min_slots}",
            )

        ca_file: Path | None = None
        if "ca_file" in t:
            ca_file = self.path(self.text(t, "ca_file", f"{prefix}.ca_file"))
            kind = _path_kind(ca_file)
            if kind != "file":
                what = {"missing": "does not exist", "directory": "is not a file"}.get(
                    kind, f"is {kind}")
                self.fail(f"{prefix}.ca_file", f"expected a PEM file, but {ca_file} {what}")
        insecure = self.boolean(t, "insecure", f"{prefix}.insecure", default=False)
        if insecure and ca_file is not None:
            self.fail(
                f"{prefix}.insecure",
                "insecure = true skips TLS verification, so "
                "ca_file would be ignored; set only one of them",
            )

        fetch_interval = self.duration(
            t, "fetch_interval", f"{prefix}.fetch_interval",
            default=runner.fetch_interval, allow_zero=False,
        )
        return {
            "name": name,
            "url": url,
            "uuid": uuid,
            "labels": labels,
            "weight": self.number(t, "weight", f"{prefix}.weight", default=1.0),
            "min_slots": min_slots,
            "max_slots": max_slots,
            "fetch_interval": fetch_interval,
            "fetch_interval_max": self.fetch_interval_max(
                t, prefix, fetch_interval, default=runner.fetch_interval_max),
            "ca_file": ca_file,
            "insecure": insecure,
            **self.job_settings(t, prefix, runner),
        }

    # -- job settings (issue 14) ----------------------------------------------------------

    def job_settings(
        self, t: Mapping[str, Any], prefix: str, runner: RunnerSettings
    ) -> dict[str, Any]:
        """A connection's job_timeout, envs, env_file and the job_env they make."""
        envs = self.envs(t, prefix)
        env_file = self.env_file_path(t, prefix)
        job_env = {**self.runner_env, **self.env_layer(envs, env_file, prefix)}
        timeout = self.duration(
            t, "job_timeout", f"{prefix}.job_timeout", default=runner.job_timeout,
            allow_zero=False,
        )
        return {"job_timeout": timeout, "envs": envs, "env_file": env_file, "job_env": job_env}

    def envs(self, t: Mapping[str, Any], prefix: str) -> dict[str, str]:
        """``envs = {NAME = "value"}``: names as in a shell, values strings."""
        dotted = f"{prefix}.envs"
        value = t.get("envs", {})
        if not isinstance(value, dict):
            got = describe_value(value)
            self.fail(dotted, f'expected a table like {{NAME = "value"}}, got {got}')
        out: dict[str, str] = {}
        for name, item in value.items():
            key = f"{dotted}.{_toml_key(name)}"
            if not _ENV_NAME_RE.fullmatch(name):
                self.fail(key, "expected a variable name of letters, digits and _ "
                          "(not starting with a digit)")
            if not isinstance(item, str):
                self.fail(key, f"expected a string value, got {_type_only(item)}")
            if "\x00" in item:
                self.fail(key, "expected a value without NUL characters")
            out[name] = item
        return out

    def env_file_path(self, t: Mapping[str, Any], prefix: str) -> Path | None:
        if "env_file" not in t:
            return None
        return self.path(self.text(t, "env_file", f"{prefix}.env_file"))

    def env_layer(
        self, envs: Mapping[str, str], env_file: Path | None, prefix: str
    ) -> dict[str, str]:
        """One level's variables: ``envs``, then the file's over them (forgejo-runner's
        order, config.go: ``maps.Copy(Runner.Envs, <env file>)``). The file is read now:
        a missing or unreadable one is an error (forgejo-runner skips a missing one)."""
        out = dict(envs)
        if env_file is None:
            return out
        dotted = f"{prefix}.env_file"
        try:
            raw = env_file.read_bytes()
        except FileNotFoundError:
            self.fail(dotted, f"expected a dotenv file, but {env_file} does not exist")
        except IsADirectoryError:
            self.fail(dotted, f"expected a dotenv file, but {env_file} is a directory")
        except OSError as exc:
            self.fail(dotted, f"cannot read {env_file}: {exc.strerror or exc}")
        try:
            out.update(parse_env_text(raw.decode("utf-8"), self.env))
        except UnicodeDecodeError as exc:
            self.fail(dotted, f"{env_file} is not UTF-8 text (byte {exc.start})")
        except EnvFileError as exc:
            self.fail(dotted, f"{env_file}: {exc}")
        return out

    def url(self, t: Mapping[str, Any], dotted: str) -> str:
        expected = 'an http:// or https:// URL with a host, like "https://forgejo.example"'
        raw = self.text(t, "url", dotted)
        try:
            parts = urllib.parse.urlsplit(raw)
        except ValueError:  # "Invalid IPv6 URL": a "[" without its "]"
            self.fail(dotted, f"expected {expected}, got {describe_value(raw)} (bad host)")
        if parts.username is not None or parts.password is not None:
            # Not echoed: the URL holds a credential.
            self.fail(
                dotted,
                "credentials in the URL are not supported (and not shown); "
                "authenticate with token_file, token_env or token",
            )
        if parts.query or parts.fragment:
            # Not echoed either: a query string is another place people put tokens.
            self.fail(dotted, f"expected {expected} without ?query or #fragment (value not shown)")
        if parts.scheme.lower() not in ("http", "https"):
            self.fail(dotted, f"expected {expected}, got {describe_value(raw)}")
        if not parts.hostname:
            self.fail(dotted, f"expected {expected}, got {describe_value(raw)} (no host)")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            self.fail(dotted, f"expected {expected}, got {describe_value(raw)} (bad port)")
        return raw.rstrip("/")

    def cross_check(self, drafts: list[dict[str, Any]], runner: RunnerSettings) -> None:
        """Rules that involve several connections at once."""
        by_folded: dict[str, str] = {}
        by_target: dict[tuple[str, str], str] = {}
        for d in drafts:
            name = d["name"]
            folded = name.casefold()
            if folded in by_folded:
                self.fail(
                    f"connections.{name}",
                    f"name clashes with connections."
                    f"{by_folded[folded]} (names are file names and must differ in more "
                    "than letter case)",
                )
            by_folded[folded] = name
            target = (d["url"].casefold(), d["uuid"])
            if target in by_target:
                self.fail(
                    f"connections.{name}",
                    f"same url and uuid as connections."
                    f"{by_target[target]}: one runner registration must be configured "
                    "once, or the two would fetch as the same runner",
                )
            by_target[target] = name
        total = sum(d["min_slots"] for d in drafts)
        if total > runner.capacity:
            parts = ", ".join(f"{d['name']}={d['min_slots']}" for d in drafts if d["min_slots"])
            self.fail(
                "connections",
                f"sum of min_slots ({total}: {parts}) exceeds "
                f"runner.capacity ({runner.capacity}); guarantees must fit in capacity",
            )

    # -- secrets ------------------------------------------------------------------------

    def token(self, name: str, t: Mapping[str, Any]) -> tuple[str, str]:
        """Resolve the one token source of a connection. No message ever contains the token;
        when a *name* (env var, file path) looks like a pasted token, it is not echoed either."""
        prefix = f"connections.{name}"
        if "token_file" in t:
            dotted = f"{prefix}.token_file"
            raw = self.text(t, "token_file", dotted, secret=True)
            if _looks_like_token(raw) and "/" not in raw:
                self.fail(
                    dotted,
                    "expected a path to a file holding the token; this value "
                    "looks like a token itself (not shown); use token_env or token",
                )
            path = self.path(raw)
            try:
                token = read_secret_file(path)
            except SecretFileError as exc:
                self.fail(dotted, f"token file {exc}")
            self.check_token_chars(dotted, token, f"token in file {path}")
            return token, f"file:{path}"
        if "token_env" in t:
            dotted = f"{prefix}.token_env"
            var = self.text(t, "token_env", dotted, secret=True)
            if not _ENV_NAME_RE.fullmatch(var) or _looks_like_token(var):
                self.fail(
                    dotted,
                    "expected the name of an environment variable (letters, "
                    "digits and _, like FORGEJO_TOKEN), got a value that is not one "
                    "(not shown, in case it is the token itself)",
                )
            if var not in self.env:
                self.fail(dotted, f"environment variable {var} is not set")
            token = self.env[var].strip()
            if not token:
                self.fail(dotted, f"environment variable {var} is empty")
            self.check_token_chars(dotted, token, f"environment variable {var}")
            return token, f"env:{var}"
        dotted = f"{prefix}.token"
        token = self.text(t, "token", dotted, secret=True)
        self.check_token_chars(dotted, token, "token")
        return token, "config"

    def check_token_chars(self, dotted: str, token: str, what: str) -> None:
        # It goes into an HTTP header; a second line in a token file is a mistake.
        if any(c.isspace() or not c.isprintable() for c in token):
            self.fail(
                dotted,
                f"{what} contains whitespace or control characters inside it "
                "(value not shown); expected a single token",
            )


def _path_kind(path: Path) -> str:
    """"file", "directory", "missing", or what else it is (or why it cannot be looked at).

    ``Path.exists`` lets some errors through (a name longer than NAME_MAX), so the
    checks of paths from the file go through here."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"unusable ({reason})"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    return "not a regular file or directory"


def _type_only(value: object) -> str:
    """``describe_value`` without the value, for secrets."""
    return describe_value(value).split(" (", 1)[0]


#: A run of hex digits as long as a Forgejo token (40) or nearly: never echoed.
_TOKEN_LIKE_RE = re.compile(r"[0-9A-Fa-f]{32,}")


def _hide_tokens(text: str) -> str:
    """Mask what looks like a token in a message about a value: a token pasted into the
    wrong key (``url``, ``metrics.listen``, a duration...) must not reach a log either."""
    return _TOKEN_LIKE_RE.sub("<hidden, looks like a token>", text)


def _looks_like_token(text: str) -> bool:
    """Forgejo tokens are 40 hex digits; refuse to echo anything resembling one."""
    return len(text) >= 32 and all(c in string.hexdigits for c in text)


def _parse_listen(text: str) -> tuple[str, int] | None:
    """``"host:port"`` or ``"[v6]:port"`` → (host, port); None if malformed."""
    if text.startswith("["):
        m = re.fullmatch(r"\[([^\]]+)\]:(\d{1,5})", text)
        if m is None:
            return None
        host, port_text = m.group(1), m.group(2)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host or ":" in host or not re.fullmatch(r"\d{1,5}", port_text):
            return None
        if not _HOSTNAME_RE.fullmatch(host):
            return None
        if re.fullmatch(r"[\d.]+", host):  # all digits: must then be a real IPv4 address
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                return None
    port = int(port_text)
    if port > 65535:
        return None
    return host, port


# ---------------------------------------------------------------------------------------
# Showing and checking
