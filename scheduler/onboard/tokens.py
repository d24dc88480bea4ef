"""Secret files: reading a registration token, writing a runner token.

A runner token goes to ``<state_dir>/tokens/<connection>.token`` (directory 0700, file
0600, written atomically) and the config refers to it with ``token_file``. Nothing
here puts a secret into a message.
"""

from __future__ import annotations

import os
from pathlib import Path

from scheduler.atomicfile import ensure_private_dir, write_atomic
from scheduler.errors import OnboardError, SecretFileError
from scheduler.secretfile import read_secret_file


def token_path(state_dir: Path, connection: str) -> Path:
    return state_dir / "tokens" / f"{connection}.token"


def write_token(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` as 0600 in a 0700 directory (created if missing)."""
    try:
        ensure_private_dir(path.parent)
        write_atomic(path, (token + "\n").encode("utf-8"), mode=0o600)
    except OSError as exc:
        raise OnboardError(f"cannot write token file {path}: {exc.strerror or exc}") from None


def reference(config_path: Path, target: Path) -> str:
    """How the config at ``config_path`` should name ``target``: relative to the
    config's directory when inside it (the file and its state move together),
    else absolute."""
    base = Path(os.path.abspath(config_path)).parent
    target = Path(os.path.abspath(target))
    try:
        return str(target.relative_to(base))
    except ValueError:
        return str(target)


def read_secret(source: str, what: str) -> str:
    """The single token in file ``source`` (``-``: standard input). ``what`` names it in
    errors ("registration token file")."""
    where = "standard input" if source == "-" else source
    try:
        token = read_secret_file(source)
    except SecretFileError as exc:
        raise OnboardError(f"{what} {exc}") from None
    if any(c.isspace() or not c.isprintable() for c in token):
        raise OnboardError(
            f"{what} {where} holds more than one word or control characters "
            "(content not shown); expected a single token"
        )
    return token
