"""Writing a file so that readers see the old content or the new, never half of it.

Used for the per-connection state (:mod:`scheduler.keys`), runner token files and the
config file edited by ``register`` / written by ``import-config``. The recipe: a
temporary file in the same directory (created ``O_EXCL`` with the final mode, so a
secret is never readable by others even for a moment), ``fsync``, ``rename`` over the
target, ``fsync`` of the directory so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

__all__ = ["ensure_private_dir", "write_atomic"]


def write_atomic(
    path: Path, data: bytes, *, mode: int = 0o600, owner: tuple[int, int] | None = None
) -> None:
    """Replace ``path`` with ``data`` atomically; the new file gets exactly ``mode``
    (not filtered by the umask) and, when given and allowed, ``owner`` (uid, gid).

    On any error the temporary file is removed and ``path`` is untouched.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)
            if owner is not None and owner != (os.getuid(), os.getgid()):
                with contextlib.suppress(PermissionError):  # only root may give files away
                    os.fchown(fd, *owner)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def ensure_private_dir(path: Path, *, parent_too: bool = True) -> None:
    """Create ``path`` (and missing parents) as 0700; tighten it, and with ``parent_too``
    its parent, when group or others have access."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for p in (path, path.parent) if parent_too else (path,):
        if p.stat().st_mode & 0o077:
            os.chmod(p, 0o700)
