"""Allowed but worth a warning at start-up and in ``check-config``."""

from __future__ import annotations

import ipaddress
import ssl
import stat
import urllib.parse
from pathlib import Path

from scheduler.config.values import Config
from scheduler.executor.labels import plan_labels


def token_file_warning(path: Path) -> str | None:
    """A warning if the token file at ``path`` is readable by group or others, else None.

    Not an error: a root-owned 0640 file with a dedicated group can be deliberate. But
    the usual cause is a ``umask 022`` when the file was written, which exposes the
    runner's credential to every local user, so it is worth a line in the log.
    A file that cannot be stat'ed gives None (loading it will already have failed).
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH) == 0:
        return None
    who = " and ".join(
        w for w, bit in (("group", stat.S_IRGRP), ("others", stat.S_IROTH)) if mode & bit
    )
    return (
        f"token file {path} is readable by {who} (mode {mode:04o}); "
        f"restrict it with: chmod 600 {path}"
    )


def ca_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable PEM CA bundle, or None if it loads."""
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        return f"cannot be loaded as PEM certificates ({exc})"
    return None


def config_warnings(config: Config) -> list[str]:
    """Things that are allowed but deserve a log line at start-up (and in check-config):
    token files others can read, a ca_file that does not load, connections that skip
    TLS verification, and labels that are not declared because nothing here runs them."""
    out: list[str] = []
    for c in config.connections:
        warning = dropped_labels_warning(c.name, c.labels)
        if warning:
            out.append(warning)
        if c.token_source.startswith("file:"):
            warning = token_file_warning(Path(c.token_source.removeprefix("file:")))
            if warning:
                out.append(f"connections.{c.name}: {warning}")
        if c.ca_file is not None:
            problem = ca_file_problem(c.ca_file)
            if problem:
                out.append(
                    f"connections.{c.name}: ca_file {c.ca_file} {problem}; TLS to {c.url} "
                    "will fail certificate verification"
                )
        if c.insecure and c.url.lower().startswith("https:"):
            out.append(
                f"connections.{c.name}: insecure = true: TLS certificates of {c.url} "
                "are not verified"
            )
        host = (urllib.parse.urlsplit(c.url).hostname or "").lower()
        if c.url.lower().startswith("http:") and not _is_loopback(host):
            out.append(
                f"connections.{c.name}: {c.url} is plain HTTP: the runner token and every "
                "task's secrets cross the network unencrypted (use https://)"
            )
    return out


def dropped_labels_warning(connection: str, labels: tuple[str, ...]) -> str | None:
    """One line naming the labels of ``connection`` that are not declared, or None."""
    plan = plan_labels(labels)
    if not plan.dropped:
        return None
    return (
        f"connections.{connection}: labels not declared to Forgejo (kept in the file): "
        f"{plan.describe_dropped()}; declared: {', '.join(plan.names)}"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
