"""The configuration file: one TOML file, validated completely before anything starts.

Why so strict: this process holds tokens for several Forgejo instances and a fixed
number of slots on a machine. A typo that silently falls back to a default (``max_slot``
instead of ``max_slots``, ``weight = true``) would show up hours later as an unfair or
overloaded runner, so every problem is a :class:`ConfigError` at start-up whose message
names the file, the dotted key and what was expected, e.g.::

    config.toml: connections.codeberg.max_slots: expected an integer between 1
    and capacity (4), got 7

Unknown keys are errors too (with a "did you mean" from :mod:`difflib`).

Tokens are secrets: a token value is never part of an error message, a ``repr`` or the
output of :func:`render_config`; only where it came from (``token_source``) is shown.

Layout (``config.toml`` in the repository root is the commented example, and
``docs/configuration.md`` the reference)::

    [runner]                 capacity, fetch_interval, fetch_timeout, report_interval,
                             shutdown_timeout, shutdown_resolve_timeout,
                             shutdown_report_timeout, state_dir, labels,
                             job_timeout, envs, env_file
    [metrics]                listen, enabled
    [logging]                level, format
    [connections.<name>]     url, uuid, token_file | token_env | token, labels, weight,
                             min_slots, max_slots, fetch_interval, ca_file, insecure,
                             job_timeout, envs, env_file
"""

from scheduler.config.checks import ca_file_problem, config_warnings, token_file_warning
from scheduler.config.parse import (
    _CONNECTION_KEYS,
    _LOGGING_KEYS,
    _METRICS_KEYS,
    _NAME_RE,
    _RUNNER_KEYS,
    MAX_CAPACITY,
    load_config,
    parse_config,
)
from scheduler.config.render import _toml_key, render_config
from scheduler.config.values import (
    Config,
    ConnectionSettings,
    LoggingSettings,
    MetricsSettings,
    RunnerSettings,
    Share,
)

__all__ = [
    "MAX_CAPACITY",
    "_CONNECTION_KEYS",
    "_LOGGING_KEYS",
    "_METRICS_KEYS",
    "_NAME_RE",
    "_RUNNER_KEYS",
    "Config",
    "ConnectionSettings",
    "LoggingSettings",
    "MetricsSettings",
    "RunnerSettings",
    "Share",
    "_toml_key",
    "ca_file_problem",
    "config_warnings",
    "load_config",
    "parse_config",
    "render_config",
    "token_file_warning",
]
