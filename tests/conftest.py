"""pytest's hooks for the whole suite: the hypothesis profiles are loaded here, before
any test module is collected. Shared helpers live in :mod:`tests.support`."""

from __future__ import annotations

from tests.support.profiles import load_profiles

load_profiles()
