"""The resolved configuration as TOML text, tokens redacted (``check-config``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from scheduler.config.values import Config, MetricsSettings
from scheduler.durations import format_duration
from scheduler.executor.labels import plan_labels

_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def _toml_str(text: str) -> str:
    out = ['"']
    for c in text:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _toml_array(items: Iterable[str]) -> str:
    return "[" + ", ".join(_toml_str(i) for i in items) + "]"


def _toml_key(name: str) -> str:
    return name if _BARE_KEY_RE.fullmatch(name) else _toml_str(name)


def _listen(metrics: MetricsSettings) -> str:
    host = f"[{metrics.host}]" if ":" in metrics.host else metrics.host
    return f"{host}:{metrics.port}"


def render_config(config: Config) -> str:
    """The resolved config as TOML text, every default filled in, tokens shown as
    ``"<redacted> (from env:NAME)"``. Used by ``forgejo-scheduler check-config``, so an
    operator sees what the service will actually do (inherited labels, absolute paths,
    normalised URLs) rather than what they think they wrote.

    The output parses as TOML; it is not meant to be loaded back (tokens are redacted).
    """
    r = config.runner
    m = config.metrics
    lines = [
        f"# Resolved configuration from {config.source} (all defaults filled in).",
        "",
        "[runner]",
        f"capacity = {r.capacity}",
        f"fetch_interval = {_toml_str(format_duration(r.fetch_interval))}",
        (
            f"fetch_interval_max = {_toml_str(format_duration(r.fetch_interval_max))}"
            if r.fetch_interval_max is not None
            else "# fetch_interval_max: not set (10 x each connection's fetch_interval)"
        ),
        f"fetch_timeout = {_toml_str(format_duration(r.fetch_timeout))}",
        f"report_interval = {_toml_str(format_duration(r.report_interval))}",
        f"shutdown_timeout = {_toml_str(format_duration(r.shutdown_timeout))}",
        f"shutdown_resolve_timeout = {_toml_str(format_duration(r.shutdown_resolve_timeout))}",
        f"shutdown_report_timeout = {_toml_str(format_duration(r.shutdown_report_timeout))}",
        f"state_dir = {_toml_str(str(r.state_dir))}",
        f"labels = {_toml_array(r.labels)}",
        *_job_lines(r.job_timeout, r.envs, r.env_file),
        "",
        "[metrics]",
        f"listen = {_toml_str(_listen(m))}",
        f"enabled = {'true' if m.enabled else 'false'}",
        "",
        "[logging]  # run's --log-level / --log-format override these",
        f"level = {_toml_str(config.logging.level)}",
        f"format = {_toml_str(config.logging.format)}",
    ]
    for c in config.connections:
        lines += [
            "",
            f"[connections.{_toml_key(c.name)}]",
            f"url = {_toml_str(c.url)}",
            f"uuid = {_toml_str(c.uuid)}",
            f"token = {_toml_str(f'<redacted> (from {c.token_source})')}",
            f"labels = {_toml_array(c.labels)}",
            *_label_lines(c.labels),
            f"weight = {c.weight!r}",
            f"min_slots = {c.min_slots}",
            f"max_slots = {c.max_slots}",
            f"fetch_interval = {_toml_str(format_duration(c.fetch_interval))}",
            (
                f"fetch_interval_max = {_toml_str(format_duration(c.fetch_interval_max))}"
                if c.fetch_interval_max is not None
                else f"# fetch_interval_max: not set ({format_duration(c.poll_ceiling)}, "
                "10 x fetch_interval)"
            ),
            (
                f"ca_file = {_toml_str(str(c.ca_file))}"
                if c.ca_file is not None
                else "# ca_file: not set (system trust store)"
            ),
            f"insecure = {'true' if c.insecure else 'false'}",
            *_job_lines(c.job_timeout, c.envs, c.env_file),
            f"# job environment from envs/env_file: {', '.join(sorted(c.job_env)) or 'none'}",
        ]
    return "\n".join(lines) + "\n"


def _label_lines(labels: Iterable[str]) -> list[str]:
    """What Forgejo is told, and what is not declared and why (scheduler.executor.labels)."""
    plan = plan_labels(labels)
    out = [f"# declared to Forgejo: {', '.join(plan.names) or 'nothing'}"]
    out += [f"# not declared: {label.text}: {why}" for label, why in plan.dropped]
    return out


def _job_lines(job_timeout: float, envs: Mapping[str, str], env_file: Path | None) -> list[str]:
    """job_timeout, envs as written, env_file (its values are not shown: they may be secret)."""
    table = ", ".join(f"{_toml_key(k)} = {_toml_str(v)}" for k, v in envs.items())
    return [
        f"job_timeout = {_toml_str(format_duration(job_timeout))}",
        f"envs = {{{table}}}",
        f"env_file = {_toml_str(str(env_file))}" if env_file else "# env_file: not set",
    ]
