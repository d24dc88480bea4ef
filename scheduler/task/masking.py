"""Secret masking for task log rows.

Every row is masked *before* it is queued for UpdateLog, so a secret never sits in
memory in a form that could be sent (or logged) by accident.

What is masked (see ``docs/executor.md`` for the comparison with forgejo-runner):

* every value of ``task.secrets`` and the tokens in ``task.context`` (``token``,
  ``forgejo_runtime_token``, ``gitea_runtime_token``);
* for a multi-line value: the whole value, its single-line form with literal ``\\n``
  joins, and each of its lines on its own (stripped), because a log row is one line
  and a multi-line secret printed to the log arrives split over several rows;
* values registered at run time with ``::add-mask::``.

What is not masked: empty or whitespace-only values (masking ``" "`` would wipe every
space in the log and protect nothing), and single lines of a multi-line value that are
shorter than :data:`MIN_LINE_LENGTH` characters (a lone ``}`` or ``-----`` line of a
JSON or PEM secret carries nothing secret, and masking it would mangle every log).
Whole values are masked whatever their length, as forgejo-runner does.

All values are replaced in one regex pass, longest first, so that a secret that
contains another one is replaced as a whole and the ``***`` of one replacement is
never matched again by a later one (a secret ``*`` would otherwise eat its own marks).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from scheduler.protocol import Task

REPLACEMENT = "***"

#: Lines of a multi-line secret shorter than this are only masked as part of the whole.
MIN_LINE_LENGTH = 3

_CONTEXT_TOKENS = ("token", "forgejo_runtime_token", "gitea_runtime_token")


class Masker:
    """The set of values to hide in a task's log, and the function that hides them."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._dirty = False
        for value in values:
            self.add(value)

    @classmethod
    def for_task(cls, task: Task) -> Masker:
        """Masks for everything secret the server handed over with ``task``."""
        masker = cls(task.secrets.values())
        context: Mapping[str, Any] = task.context
        for key in _CONTEXT_TOKENS:
            value = context.get(key)
            if isinstance(value, str):
                masker.add(value)
        return masker

    def __len__(self) -> int:
        return len(self._values)

    def add(self, value: str) -> None:
        """Register a value (a secret, or the argument of ``::add-mask::``)."""
        normalised = value.replace("\r\n", "\n")
        if not normalised.strip():
            return
        candidates = {normalised, normalised.strip()}
        if "\n" in normalised:
            lines = normalised.split("\n")
            candidates.add("\\n".join(lines))
            for line in lines:
                stripped = line.strip()
                if len(stripped) >= MIN_LINE_LENGTH:
                    candidates.add(stripped)
        new = candidates - self._values
        if new:
            self._values |= new
            self._dirty = True

    def mask(self, text: str) -> str:
        """``text`` with every registered value replaced by ``***``."""
        if not self._values:
            return text
        if self._dirty or self._pattern is None:
            ordered = sorted(self._values, key=lambda v: (-len(v), v))
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
            self._dirty = False
        return self._pattern.sub(REPLACEMENT, text)
