"""Masker: which values are hidden, and how."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from scheduler.protocol import Task
from scheduler.task.masking import Masker


def test_masks_every_occurrence() -> None:
    m = Masker(["hunter2"])
    assert m.mask("pw=hunter2 again hunter2!") == "pw=*** again ***!"


def test_longest_first_and_single_pass() -> None:
    m = Masker(["abc", "abcdef", "*"])
    # "abcdef" wins over its prefix "abc"; the "***" written for it is not re-masked by "*".
    assert m.mask("xabcdefx abc *") == "x***x *** ***"


def test_overlapping_values() -> None:
    m = Masker(["secret", "cretin"])
    assert m.mask("secretin") == "***in"


def test_ignores_empty_and_whitespace_values() -> None:
    m = Masker(["", "   ", "\n"])
    assert len(m) == 0
    assert m.mask("a b c") == "a b c"


def test_short_whole_values_are_still_masked() -> None:
    # forgejo-runner masks every non-empty secret: so do we (a short secret is still a secret).
    assert Masker(["x1"]).mask("ax1b") == "a***b"


def test_multiline_secret_lines_and_forms() -> None:
    key = "-----BEGIN KEY-----\nAAAAbbbbCCCC\r\n  ddddEEEE  \n}\n-----END KEY-----"
    m = Masker([key])
    # Each line on its own (a log row is one line), stripped.
    assert m.mask("-----BEGIN KEY-----") == "***"
    assert m.mask("AAAAbbbbCCCC") == "***"
    assert m.mask("    ddddEEEE") == "    ***"
    # Lines shorter than MIN_LINE_LENGTH are not masked on their own...
    assert m.mask("}") == "}"
    # ...but the single-line form with literal \n joins is.
    flat = "-----BEGIN KEY-----\\nAAAAbbbbCCCC\\n  ddddEEEE  \\n}\\n-----END KEY-----"
    assert m.mask(f"json: {flat}") == "json: ***"


def test_add_later_recompiles() -> None:
    m = Masker(["one1"])
    assert m.mask("one1 two2") == "*** two2"
    m.add("two2")
    assert m.mask("one1 two2") == "*** ***"


def test_regex_metacharacters_are_literal() -> None:
    m = Masker(["a.b*c(d)", "[x]"])
    assert m.mask("a.b*c(d) aXbc [x] x") == "*** aXbc *** x"


def test_for_task_uses_secrets_and_context_tokens() -> None:
    task = Task(
        id=1,
        secrets={"FORGEJO_TOKEN": "tok-aaaa", "MY": "mine"},
        context={"token": "ctx-tok", "gitea_runtime_token": "jwt.x.y", "actor": "alice"},
    )
    m = Masker.for_task(task)
    assert m.mask("tok-aaaa mine ctx-tok jwt.x.y alice") == "*** *** *** *** alice"


@given(
    secrets=st.lists(st.text(min_size=1, max_size=8), max_size=4),
    text=st.text(max_size=60),
)
def test_no_secret_survives(secrets: list[str], text: str) -> None:
    """Whatever the text, no (non-blank, single-line) secret is left in the output."""
    secrets = [s for s in secrets if s.strip() and not set(s) & {"\n", "\r", "\0"}]
    m = Masker(secrets)
    out = m.mask(text + "".join(secrets))
    for s in secrets:
        # A secret may re-appear only as part of the replacement marks themselves.
        assert s not in out.replace("***", "\0") or set(s) <= {"*"}
