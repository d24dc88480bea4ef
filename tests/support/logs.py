"""Log lines captured by pytest, picked by level and prefix."""

from __future__ import annotations

import logging

import pytest


def lines(caplog: pytest.LogCaptureFixture, start: str, level: int = logging.WARNING) -> list[str]:
    """The messages at ``level`` that start with ``start``."""
    return [r.getMessage() for r in caplog.records
            if r.levelno == level and r.getMessage().startswith(start)]
