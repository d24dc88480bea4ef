"""The configuration's values: frozen attrs classes (every problem becomes a
:class:`scheduler.errors.ConfigError`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs

#: ``fetch_interval_max`` when not configured: this many times ``fetch_interval``.
FETCH_INTERVAL_MAX_FACTOR = 10.0

# ---------------------------------------------------------------------------------------
# The values

#: forgejo-runner's ``runner.timeout`` default: a job running longer is cancelled.
DEFAULT_JOB_TIMEOUT = 3 * 3600.0


@attrs.frozen
class Share:
    """A connection's claim on the runner slots: the fair-share rule's three inputs.

    ``weight`` scales its share, ``min_slots`` are guaranteed before anyone else is
    served, ``max_slots`` caps it (``None``: the whole capacity). Read by the slot
    ledger (who gets the next slot) and exported as configuration gauges.
    """

    weight: float = 1.0
    min_slots: int = 0
    max_slots: int | None = None


@attrs.frozen(kw_only=True)
class RunnerSettings:
    """Process-wide settings from ``[runner]``; durations are seconds."""

    capacity: int
    fetch_interval: float = 2.0
    #: The longest wait between FetchTasks after empty answers (adaptive polling,
    #: scheduler.fetch.PollPace); None: 10 x each connection's fetch_interval.
    fetch_interval_max: float | None = None
    fetch_timeout: float = 30.0
    report_interval: float = 1.0
    #: How long a graceful shutdown waits for running tasks before cancelling them.
    #: Ten minutes: long enough for typical CI jobs to finish on a deploy/restart,
    #: short enough that a stuck job does not block a host reboot indefinitely.
    shutdown_timeout: float = 600.0
    #: During a shutdown, how long an unresolved request key is retried (it then stays
    #: on disk for the next start), and how long a final report may take (counted from
    #: the stop, or from the report's start if later). 30 s each: with no running task a
    #: stop during an outage ends within about 30 s, inside systemd's 90 s default.
    shutdown_resolve_timeout: float = 30.0
    shutdown_report_timeout: float = 30.0
    #: Absolute; the file's default is ``state`` next to the config file.
    state_dir: Path
    #: Labels for connections that do not set their own.
    labels: tuple[str, ...] = ()
    # -- job settings (issue 14) --
    #: A job running longer is cancelled (forgejo-runner's ``runner.timeout``, 3 h).
    job_timeout: float = DEFAULT_JOB_TIMEOUT
    #: Extra job environment as written (``envs``) and the file read at load (``env_file``).
    envs: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    env_file: Path | None = None


@attrs.frozen(kw_only=True)
class MetricsSettings:
    """The Prometheus endpoint from ``[metrics]``; port 0 asks the OS for a free port."""

    host: str = "127.0.0.1"
    port: int = 9464
    enabled: bool = True


@attrs.frozen(kw_only=True)
class LoggingSettings:
    """``[logging]``: the defaults of ``run``'s ``--log-level`` and ``--log-format``
    (see :mod:`scheduler.logs`); the command line overrides them."""

    level: str = "info"
    format: str = "text"


@attrs.frozen(kw_only=True)
class ConnectionSettings:
    """One Forgejo instance (one runner registration) from ``[connections.<name>]``.

    ``token`` is the secret itself and is deliberately left out of ``repr``; use
    ``token_source`` ("file:/abs/path", "env:NAME" or "config") when talking about it.
    """

    name: str
    url: str
    uuid: str
    token: str = attrs.field(repr=False)
    token_source: str
    labels: tuple[str, ...]
    weight: float = 1.0
    min_slots: int = 0
    max_slots: int
    fetch_interval: float
    #: None: 10 x fetch_interval (see RunnerSettings.fetch_interval_max).
    fetch_interval_max: float | None = None
    ca_file: Path | None = None
    insecure: bool = False
    # -- job settings (issue 14) --
    #: This connection's, else runner.job_timeout.
    job_timeout: float = DEFAULT_JOB_TIMEOUT
    #: Its own ``envs``/``env_file`` as written (None: not set).
    envs: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    env_file: Path | None = None
    #: What its jobs get: runner envs < runner env_file < own envs < own env_file.
    job_env: Mapping[str, str] = attrs.field(factory=dict, hash=False)

    @property
    def poll_ceiling(self) -> float:
        """The longest idle wait between FetchTasks (never below ``fetch_interval``)."""
        if self.fetch_interval_max is None:
            return FETCH_INTERVAL_MAX_FACTOR * self.fetch_interval
        return max(self.fetch_interval, self.fetch_interval_max)

    @property
    def share(self) -> Share:
        return Share(self.weight, self.min_slots, self.max_slots)


@attrs.frozen(kw_only=True)
class Config:
    """The whole, validated configuration."""

    source: Path
    runner: RunnerSettings
    metrics: MetricsSettings
    connections: tuple[ConnectionSettings, ...]
    logging: LoggingSettings = LoggingSettings()


# ---------------------------------------------------------------------------------------
# Schema: which keys exist where (for unknown-key errors and "did you mean")
