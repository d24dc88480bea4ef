"""Getting a runner onto this scheduler: ``register`` (a new runner registration on a
Forgejo, added to the config) and ``import-config`` (a forgejo-runner ``config.yml`` /
``.runner`` turned into our ``config.toml``). See ``docs/onboarding.md``.

Shared rules: a runner token is written only to a 0600 file under ``state_dir`` and
referenced with ``token_file``; it never goes into the TOML, onto stdout/stderr or into
a log line. Every file is written atomically, and the config is validated by
:mod:`scheduler.config` before it replaces the old one.
"""

from __future__ import annotations
