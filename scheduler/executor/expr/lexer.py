"""Tokens of an expression (the text between ``${{`` and ``}}``).

The token set and literal forms follow actionlint's lexer, which forgejo-runner uses:
identifiers ``[A-Za-z_][A-Za-z0-9_-]*``, single-quoted strings with ``''`` for a quote,
numbers with an optional leading ``-`` (``0x`` hex, fraction, exponent), and the
punctuation ``( ) [ ] . * , ! < <= > >= == != && ||``.
"""

from __future__ import annotations

import enum

import attrs

from scheduler.executor.expr.errors import ExpressionError
from scheduler.executor.expr.values import NUMBER_RE, WHITESPACE, parse_number


class T(enum.Enum):
    IDENT = "identifier"
    STRING = "string"
    NUMBER = "number"
    LPAREN = "'('"
    RPAREN = "')'"
    LBRACKET = "'['"
    RBRACKET = "']'"
    DOT = "'.'"
    STAR = "'*'"
    COMMA = "','"
    NOT = "'!'"
    LT = "'<'"
    LE = "'<='"
    GT = "'>'"
    GE = "'>='"
    EQ = "'=='"
    NE = "'!='"
    AND = "'&&'"
    OR = "'||'"
    END = "end of expression"


@attrs.frozen
class Token:
    type: T
    text: str
    offset: int
    value: object = None


_SINGLE = {
    "(": T.LPAREN, ")": T.RPAREN, "[": T.LBRACKET, "]": T.RBRACKET,
    ".": T.DOT, "*": T.STAR, ",": T.COMMA,
}
#: Two-character operators first, then the one-character ones they start.
_DOUBLE = {"<=": T.LE, ">=": T.GE, "==": T.EQ, "!=": T.NE, "&&": T.AND, "||": T.OR}
_ALONE = {"<": T.LT, ">": T.GT, "!": T.NOT}
_HINTS = {
    '"': "; strings take single quotes ('text', with '' for a quote)",
    "=": "; did you mean '=='?",
    "&": "; did you mean '&&'?",
    "|": "; did you mean '||'?",
    "$": "; pass the expression without its ${{ }}",
    "{": "; there are no object literals",
    "}": "; an expression ends at }}: pass it without its ${{ }}",
    "+": "; there is no arithmetic",
    "-": "; there is no arithmetic ('-' only starts a number)",
}


def _is_ident_start(c: str) -> bool:
    return c == "_" or ("a" <= c <= "z") or ("A" <= c <= "Z")


def _is_ident_char(c: str) -> bool:
    return _is_ident_start(c) or c == "-" or ("0" <= c <= "9")


def tokenize(source: str) -> list[Token]:
    """All tokens of ``source``, ending with one ``END`` token."""
    tokens: list[Token] = []
    i, n = 0, len(source)

    def fail(message: str, at: int) -> ExpressionError:
        return ExpressionError(message, source, at)

    while True:
        while i < n and source[i] in WHITESPACE:
            i += 1
        if i >= n:
            tokens.append(Token(T.END, "", n))
            return tokens
        c = source[i]
        start = i
        if _is_ident_start(c):
            i += 1
            while i < n and _is_ident_char(source[i]):
                i += 1
            tokens.append(Token(T.IDENT, source[start:i], start))
        elif ("0" <= c <= "9") or (c == "-" and i + 1 < n and "0" <= source[i + 1] <= "9"):
            match = NUMBER_RE.match(source, i)
            if match is None:  # pragma: no cover - a digit always matches
                raise fail("invalid number", start)
            i = match.end()
            follow = source[i] if i < n else ""
            if follow and (follow.isalnum() or follow == "_"):
                raise fail(f"unexpected character {follow!r} after number {match[0]}", i)
            if follow == "." and match["frac"] is None and match["exp"] is None:
                raise fail(f"a fraction needs digits after '.' in {match[0]}.", i)
            tokens.append(Token(T.NUMBER, match[0], start, parse_number(match[0])))
        elif c == "'":
            i += 1
            parts: list[str] = []
            while True:
                close = source.find("'", i)
                if close < 0:
                    raise fail("unterminated string literal", start)
                parts.append(source[i:close])
                if source.startswith("''", close):
                    parts.append("'")
                    i = close + 2
                    continue
                i = close + 1
                break
            tokens.append(Token(T.STRING, source[start:i], start, "".join(parts)))
        elif source[i : i + 2] in _DOUBLE:
            tokens.append(Token(_DOUBLE[source[i : i + 2]], source[i : i + 2], start))
            i += 2
        elif c in _ALONE:
            tokens.append(Token(_ALONE[c], c, start))
            i += 1
        elif c in _SINGLE:
            tokens.append(Token(_SINGLE[c], c, start))
            i += 1
        else:
            raise fail(f"unexpected character {c!r}{_HINTS.get(c, '')}", start)
