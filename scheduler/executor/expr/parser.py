"""Syntax tree and recursive-descent parser.

Grammar, with GitHub's precedence (loosest first; binary operators are left-associative)::

    or       := and ( '||' and )*
    and      := equality ( '&&' equality )*
    equality := relation ( ( '==' | '!=' ) relation )*
    relation := unary ( ( '<' | '<=' | '>' | '>=' ) unary )*
    unary    := '!' unary | postfix
    postfix  := primary ( '.' IDENT | '.' '*' | '[' or ']' )*
    primary  := IDENT '(' [ or ( ',' or )* ] ')' | IDENT | NUMBER | STRING
              | 'true' | 'false' | 'null' | '(' or ')'

forgejo-runner (actionlint's parser) puts all six comparison operators on one
right-associative level; see ``docs/expressions.md`` for where that shows.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from scheduler.executor.expr.errors import ExpressionError
from scheduler.executor.expr.lexer import T, Token, tokenize

#: Deepest nesting of parentheses, brackets, calls and ``!`` accepted.
MAX_DEPTH = 64

KEYWORDS: dict[str, object] = {"true": True, "false": False, "null": None}


@attrs.frozen
class Const:
    value: object
    offset: int


@attrs.frozen
class Variable:
    name: str  # lower-cased
    offset: int


@attrs.frozen
class Property:
    target: Node
    name: str
    offset: int


@attrs.frozen
class Index:
    target: Node
    index: Node
    offset: int


@attrs.frozen
class Filter:
    target: Node
    offset: int


@attrs.frozen
class Not:
    operand: Node
    offset: int


@attrs.frozen
class Compare:
    op: str
    left: Node
    right: Node
    offset: int


@attrs.frozen
class Logical:
    op: str  # "&&" or "||"
    operands: tuple[Node, ...]
    offset: int


@attrs.frozen
class Call:
    name: str  # as written
    args: tuple[Node, ...]
    offset: int


Node = Const | Variable | Property | Index | Filter | Not | Compare | Logical | Call

_EQUALITY = {T.EQ: "==", T.NE: "!="}
_RELATION = {T.LT: "<", T.LE: "<=", T.GT: ">", T.GE: ">="}


def children(node: Node) -> Iterator[Node]:
    match node:
        case Property(target=t) | Filter(target=t):
            yield t
        case Index(target=t, index=i):
            yield t
            yield i
        case Not(operand=o):
            yield o
        case Compare(left=left, right=right):
            yield left
            yield right
        case Logical(operands=ops):
            yield from ops
        case Call(args=args):
            yield from args
        case _:
            pass


def walk(node: Node) -> Iterator[Node]:
    """``node`` and everything below it."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(children(current))


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.pos = 0
        self.depth = 0

    @property
    def cur(self) -> Token:
        return self.tokens[self.pos]

    def at(self, token_type: T) -> bool:
        return self.tokens[self.pos].type is token_type

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        if token.type is not T.END:
            self.pos += 1
        return token

    def error(self, message: str, token: Token | None = None) -> ExpressionError:
        token = token or self.cur
        return ExpressionError(message, self.source, token.offset)

    def unexpected(self, expecting: str) -> ExpressionError:
        token = self.cur
        what = "end of expression" if token.type is T.END else f"{token.text!r}"
        return self.error(f"unexpected {what}, expecting {expecting}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"expression nested more than {MAX_DEPTH} levels deep")

    def parse(self) -> Node:
        node = self.parse_or()
        if not self.at(T.END):
            raise self.unexpected("an operator or the end of the expression")
        return node

    def parse_or(self) -> Node:
        operands = [self.parse_and()]
        offset = self.cur.offset
        while self.at(T.OR):
            self.advance()
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else Logical("||", tuple(operands), offset)

    def parse_and(self) -> Node:
        operands = [self.parse_equality()]
        offset = self.cur.offset
        while self.at(T.AND):
            self.advance()
            operands.append(self.parse_equality())
        return operands[0] if len(operands) == 1 else Logical("&&", tuple(operands), offset)

    def parse_equality(self) -> Node:
        node = self.parse_relation()
        while self.cur.type in _EQUALITY:
            token = self.advance()
            node = Compare(_EQUALITY[token.type], node, self.parse_relation(), token.offset)
        return node

    def parse_relation(self) -> Node:
        node = self.parse_unary()
        while self.cur.type in _RELATION:
            token = self.advance()
            node = Compare(_RELATION[token.type], node, self.parse_unary(), token.offset)
        return node

    def parse_unary(self) -> Node:
        if self.at(T.NOT):
            token = self.advance()
            self.enter()
            operand = self.parse_unary()
            self.depth -= 1
            return Not(operand, token.offset)
        return self.parse_postfix()

    def parse_postfix(self) -> Node:
        node = self.parse_primary()
        while True:
            if self.at(T.DOT):
                dot = self.advance()
                if self.at(T.STAR):
                    self.advance()
                    node = Filter(node, dot.offset)
                elif self.at(T.IDENT):
                    name = self.advance()
                    node = Property(node, name.text, name.offset)
                else:
                    raise self.unexpected("a property name or '*' after '.'")
            elif self.at(T.LBRACKET):
                bracket = self.advance()
                self.enter()
                index = self.parse_or()
                self.depth -= 1
                if not self.at(T.RBRACKET):
                    raise self.unexpected("']'")
                self.advance()
                node = Index(node, index, bracket.offset)
            else:
                return node

    def parse_primary(self) -> Node:
        token = self.cur
        if token.type is T.IDENT:
            self.advance()
            if self.at(T.LPAREN):
                return self.parse_call(token)
            if token.text in KEYWORDS:  # case-sensitive, as in actionlint
                return Const(KEYWORDS[token.text], token.offset)
            return Variable(token.text.lower(), token.offset)
        if token.type in (T.NUMBER, T.STRING):
            self.advance()
            return Const(token.value, token.offset)
        if token.type is T.LPAREN:
            self.advance()
            self.enter()
            node = self.parse_or()
            self.depth -= 1
            if not self.at(T.RPAREN):
                raise self.unexpected("')'")
            self.advance()
            return node
        raise self.unexpected("a value (context, literal, function call or '(')")

    def parse_call(self, name: Token) -> Node:
        self.advance()  # '('
        self.enter()
        args: list[Node] = []
        if self.at(T.RPAREN):
            self.advance()
        else:
            while True:
                args.append(self.parse_or())
                if self.at(T.COMMA):
                    self.advance()
                elif self.at(T.RPAREN):
                    self.advance()
                    break
                else:
                    raise self.unexpected(f"',' or ')' in the arguments of {name.text}()")
        self.depth -= 1
        return Call(name.text, tuple(args), name.offset)


def parse(source: str) -> Node:
    """The syntax tree of ``source`` (an expression without ``${{ }}``)."""
    return _Parser(source).parse()
