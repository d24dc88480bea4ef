"""``hashFiles()``, natively: forgejo-runner runs a bundled node script for it.

Semantics of that script (``act/runner/hashfiles/index.js``, ``@actions/glob``):
patterns are relative to the workspace, newline-separated inside one argument, ``!``
negates, later patterns override earlier ones, a pattern matching a directory matches
everything below it; directories and files outside the workspace are skipped; the
result is the hex SHA-256 over the concatenated binary SHA-256 digests of the matched
files, or ``""`` when nothing matched. A first argument ``--follow-symbolic-links``
makes the walk follow directory links.

One difference: the files are hashed in sorted path order (the node globber's order
is its directory-walk order), so the same tree always gives the same value here, but
not necessarily the value forgejo-runner computes for it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

FOLLOW = "--follow-symbolic-links"


class HashFilesError(ValueError):
    """A bad option; the expression fails with this message."""


def _segment_regex(segment: str) -> str:
    out = []
    i = 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = segment.find("]", i + 2)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = segment[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regex over ``/``-separated absolute paths; matches descendants too."""
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    regex = ""
    for part in parts:
        if part == "**":
            regex += "(?:/[^/]+)*"
        else:
            regex += "/" + _segment_regex(part)
    return re.compile(regex + "(?:/.*)?", re.DOTALL)


def _walk(root: Path, follow: bool) -> Iterator[Path]:
    """Every file below ``root``; directory links entered only if ``follow``."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def hash_files(workspace: Path, args: Sequence[str]) -> str:
    """The value of ``hashFiles(*args)`` for ``workspace``."""
    follow = False
    patterns: list[str] = []
    for i, arg in enumerate(args):
        text = str(arg)
        if i == 0 and text.startswith("--"):
            if text.lower() != FOLLOW:
                raise HashFilesError(f"Invalid glob option {text}, available option: '{FOLLOW}'")
            follow = True
            continue
        patterns.extend(line.strip() for line in text.split("\n") if line.strip())
    root = workspace.resolve()
    compiled: list[tuple[bool, re.Pattern[str]]] = []
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        absolute = body if body.startswith("/") else f"{root}/{body}"
        compiled.append((negate, _pattern_regex(absolute)))
    total = hashlib.sha256()
    matched = 0
    for path in sorted(_walk(root, follow)):
        text = str(path)
        included = False
        for negate, regex in compiled:
            if regex.fullmatch(text):
                included = not negate
        if not included:
            continue
        if not path.is_file() or (path.is_symlink() and not follow):
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        total.update(digest.digest())
        matched += 1
    return total.hexdigest() if matched else ""
