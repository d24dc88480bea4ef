"""Reading a small file that holds a secret: one place for the size bound and the
error wording.

Used by the config (``token_file``), by ``register`` (the registration token file) and
by ``import-config`` (forgejo-runner's ``.runner``, which holds the runner token).
The read is bounded so that ``token_file = "/dev/zero"`` cannot hang or fill memory,
and no message ever quotes the file's content: it may be a secret, or a secret pasted
into the wrong file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

from scheduler.errors import SecretFileError

__all__ = ["MAX_SECRET_FILE_BYTES", "read_secret_file"]

#: Far above a token (40 hex characters) or a .runner file; a bigger file is not one.
MAX_SECRET_FILE_BYTES: Final = 64 * 1024


def read_secret_file(source: Path | str) -> str:
    """The file's text, stripped (``"-"``: standard input); empty or unreadable raises.

    Whether the text is a well-formed token (one word, allowed characters) is left to
    the caller: the config and ``register`` word that check differently.
    """
    stdin = str(source) == "-"
    where = "standard input" if stdin else str(source)
    try:
        if stdin:
            data = sys.stdin.buffer.read(MAX_SECRET_FILE_BYTES + 1)
        else:
            with open(source, "rb") as fh:
                data = fh.read(MAX_SECRET_FILE_BYTES + 1)
    except FileNotFoundError:
        raise SecretFileError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise SecretFileError(f"{where} is a directory") from None
    except PermissionError:
        raise SecretFileError(f"{where} is not readable (permission denied)") from None
    except OSError as exc:
        raise SecretFileError(f"{where} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. an embedded NUL in the path
        raise SecretFileError(f"{where!r} is not a usable path ({exc})") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise SecretFileError(
            f"{where} is larger than {MAX_SECRET_FILE_BYTES} bytes; expected a small secret file"
        )
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretFileError(f"{where} is not UTF-8 text") from None
    if not token:
        raise SecretFileError(f"{where} is empty")
    return token
