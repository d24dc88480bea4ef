"""``env_file``: a dotenv file of job variables, read the way forgejo-runner reads it.

forgejo-runner reads ``runner.env_file`` with ``godotenv.Read`` (v1.5). The subset of
that format understood here, which covers what such files hold in practice:

- ``NAME=value`` or ``NAME: value``, optionally after ``export``; blank lines and
  lines starting with ``#`` are ignored;
- unquoted values are trimmed and end at `` #`` (a comment);
- ``'single quoted'`` values are taken literally; ``"double quoted"`` ones turn
  ``\\n``/``\\r`` into newline/return and ``\\X`` into ``X``; either may span lines;
- ``$NAME`` / ``${NAME}`` in unquoted and double-quoted values is replaced by a
  variable defined earlier in the file, else by the service's environment, else by
  nothing; ``\\$`` is a literal ``$``.

Anything else (a bad name, an unterminated quote) is an error naming the line, where
godotenv would also fail. Values are never part of a message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_EXPAND_RE = re.compile(r"(\\)?\$(\{)?([A-Za-z0-9_]+)?(\})?")


class EnvFileError(ValueError):
    """A line that is not ``NAME=value``; the message names the line, never a value."""


def parse_env_text(text: str, env: Mapping[str, str]) -> dict[str, str]:
    """The variables of a dotenv ``text``; ``env`` is looked up for ``$NAME`` not
    defined earlier in the file."""
    out: dict[str, str] = {}
    lines = text.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        number = i + 1
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#") or line == "---":
            continue
        if line.startswith("export") and line[6:7].isspace():
            line = line[6:].lstrip()
        m = re.match(r"([^=:]*)[=:]", line)
        if m is None:
            raise EnvFileError(f"line {number}: expected NAME=value")
        name = m.group(1).strip()
        if not _NAME_RE.fullmatch(name):
            raise EnvFileError(
                f"line {number}: expected a variable name (letters, digits, '_') before '='"
            )
        rest = line[m.end():].lstrip()
        if rest[:1] in ("'", '"'):
            quote = rest[0]
            body = rest[1:]
            while not _closed(body, quote):
                if i >= len(lines):
                    raise EnvFileError(f"line {number}: unterminated {quote}quoted{quote} value")
                body += "\n" + lines[i]
                i += 1
            end = _closing(body, quote)
            value = body[:end]
            if quote == '"':
                value = _expand(_unescape(value), out, env)
        else:
            value = re.split(r"\s#", rest, maxsplit=1)[0].strip()
            value = _expand(value, out, env)
        out[name] = value
    return out


def _closing(body: str, quote: str) -> int:
    """Index of the first unescaped ``quote`` in ``body``, or -1."""
    for j, c in enumerate(body):
        if c == quote and (j == 0 or body[j - 1] != "\\"):
            return j
    return -1


def _closed(body: str, quote: str) -> bool:
    return _closing(body, quote) >= 0


def _unescape(value: str) -> str:
    def one(m: re.Match[str]) -> str:
        c = m.group(1)
        if c == "n":
            return "\n"
        if c == "r":
            return "\r"
        if c == "$":
            return "\\$"  # left for _expand, which makes it a literal "$"
        return c

    return re.sub(r"\\(.)", one, value, flags=re.DOTALL)


def _expand(value: str, defined: Mapping[str, str], env: Mapping[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return m.group(0)[1:]
        name = m.group(3)
        if name is None:
            return m.group(0)
        if name in defined:
            return defined[name]
        return env.get(name, "")

    return _EXPAND_RE.sub(one, value)
