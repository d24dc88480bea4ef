"""Round-trip editing of ``config.toml``: change one ``[connections.<name>]`` table,
keep every other byte (comments, blank lines, key order, quoting) as the operator
wrote it, check the result with our own validation, then replace the file atomically
with its mode and owner kept.

Why ``tomlkit`` (a runtime dependency only for the onboarding commands): the standard
library reads TOML (``tomllib``) but cannot write it, and re-rendering the parsed data
would drop every comment of a hand-written, heavily commented config file. tomlkit
keeps the document's text and edits it in place.
"""

from __future__ import annotations

import os
import shutil
import stat
import tomllib
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import attrs
import tomlkit
import tomlkit.exceptions
from tomlkit.items import InlineTable, Table
from tomlkit.toml_document import TOMLDocument

from scheduler.atomicfile import write_atomic
from scheduler.config import Config, parse_config
from scheduler.errors import ConfigError, OnboardError

#: Mode of a config file this module creates (filtered by the umask, like any editor's).
NEW_FILE_MODE = 0o644

_TOKEN_KEYS = ("token_file", "token_env", "token")


@attrs.frozen
class ConfigFile:
    """A config file as read: its real path (symlinks resolved, so the link stays a
    link), its document, and the mode/owner to keep (None: the file does not exist)."""

    path: Path
    doc: TOMLDocument
    mode: int | None
    owner: tuple[int, int] | None

    @property
    def exists(self) -> bool:
        return self.mode is not None


def read_config(path: Path, *, missing_dir_ok: bool = False) -> ConfigFile:
    """Parse ``path`` for editing; a missing file is an empty document. A missing
    directory is an error unless ``missing_dir_ok`` (the caller creates it: see
    :func:`make_config_dir`)."""
    real = Path(os.path.realpath(path))
    try:
        raw = real.read_bytes()
        st = real.stat()
    except FileNotFoundError:
        if not real.parent.is_dir() and not (missing_dir_ok and not _exists(real.parent)):
            raise OnboardError(f"{path}: directory {real.parent} does not exist") from None
        return ConfigFile(real, tomlkit.document(), None, None)
    except IsADirectoryError:
        raise OnboardError(f"{path}: expected a configuration file, got a directory") from None
    except OSError as exc:
        raise OnboardError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = tomlkit.parse(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise OnboardError(f"{path}: invalid TOML: not UTF-8 (byte {exc.start})") from None
    except tomlkit.exceptions.ParseError as exc:
        raise OnboardError(f"{path}: invalid TOML: {exc}") from None
    return ConfigFile(real, doc, stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid))


#: Mode of a config directory this module creates: it holds the runner's state and
#: token directory, which only the service's user needs to enter.
NEW_DIR_MODE = 0o700


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def make_config_dir(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents as :data:`NEW_DIR_MODE` (0700);
    return the ones created, deepest last, so a failed run can remove them again."""
    missing: list[Path] = []
    d = directory
    while not _exists(d):
        missing.append(d)
        d = d.parent
    created: list[Path] = []
    try:
        for d in reversed(missing):
            d.mkdir(mode=NEW_DIR_MODE)
            os.chmod(d, NEW_DIR_MODE)  # not filtered by the umask: 0700 exactly
            created.append(d)
    except OSError as exc:
        remove_dirs(created)
        raise OnboardError(f"cannot create directory {d}: {exc.strerror or exc}") from None
    return created


def remove_dirs(created: list[Path]) -> None:
    """Undo :func:`make_config_dir`: the topmost directory it created, with what this
    run put inside (it did not exist before the run)."""
    if created:
        shutil.rmtree(created[0], ignore_errors=True)


def connection_table(doc: TOMLDocument, name: str) -> Mapping[str, Any] | None:
    """The ``[connections.<name>]`` table, or None."""
    conns = doc.get("connections")
    if not isinstance(conns, Mapping):
        return None
    table = conns.get(name)
    return table if isinstance(table, Mapping) else None


def set_connection(
    doc: TOMLDocument, name: str, values: Mapping[str, Any], *, header: str | None = None
) -> None:
    """Create ``[connections.<name>]`` at the end of the connections, or update it in
    place. ``values`` replaces those keys (a ``token_file`` takes the place of a
    ``token_env``/``token`` line, so the comments around it stay meaningful); every other
    key, comment and blank line of the table is kept. ``header`` is a comment line put
    at the top of a *new* table."""
    conns = doc.get("connections")
    if conns is None:
        conns = tomlkit.table(is_super_table=True)
        doc["connections"] = conns
    elif not isinstance(conns, Table | dict):
        raise OnboardError("connections: expected a table of [connections.<name>] tables")
    table = conns.get(name)
    if table is None:
        table = tomlkit.table()
        if header:
            table.add(tomlkit.comment(header))
        for key, value in values.items():
            table[key] = value
        conns[name] = table
        return
    if not isinstance(table, MutableMapping):
        raise OnboardError(f"connections.{name}: expected a table, not a value")
    for key, value in values.items():
        if key == "token_file":
            old = next((k for k in _TOKEN_KEYS if k in table), None)
            for other in _TOKEN_KEYS:
                if other in table and other != old:
                    del table[other]
            if old is not None and old != key:
                if isinstance(table, Table | InlineTable):
                    # Same place as the old token line, so the comments around it fit.
                    table.value._replace(old, key, tomlkit.item(value))
                    continue
                del table[old]
        table[key] = value


def render(doc: TOMLDocument) -> str:
    return tomlkit.dumps(doc)


class PermissiveEnv(Mapping[str, str]):
    """The environment for validating a config outside the service: a ``token_env``
    that is not set in this shell (it may be set only in the service's unit) counts
    as set, so only the file's own correctness is judged."""

    _DUMMY = "0" * 40

    def __getitem__(self, key: str) -> str:
        return os.environ.get(key, self._DUMMY)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str)

    def __iter__(self) -> Iterator[str]:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)


def validate(data: Mapping[str, Any], source: Path) -> Config:
    """Our own validation of parsed data, as ``check-config`` does it (paths relative to
    ``source``'s directory); raises :class:`ConfigError`."""
    return parse_config(data, source=source, env=PermissiveEnv())


def validate_text(text: str, source: Path) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # tomlkit wrote something tomllib refuses
        raise ConfigError(f"{source}: the edited file is not valid TOML: {exc}") from None
    return validate(data, source)


def write_config(cf: ConfigFile, text: str) -> None:
    """Replace the file atomically, keeping its mode and owner (a new file gets
    :data:`NEW_FILE_MODE` less the umask)."""
    if cf.mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = NEW_FILE_MODE & ~umask
    else:
        mode = cf.mode
    try:
        write_atomic(cf.path, text.encode("utf-8"), mode=mode, owner=cf.owner)
    except OSError as exc:
        raise OnboardError(f"{cf.path}: cannot write: {exc.strerror or exc}") from None
