"""Hypothesis profiles, and how many examples a fuzz test generates.

``ci`` (the default) keeps hypothesis' own example counts for the tests that do not set
one; ``soak`` (``HYPOTHESIS_PROFILE=soak``, see ``scripts/fuzz-soak.sh``) multiplies the
counts of the fuzz tests, which size themselves with :func:`examples`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

#: How much more the fuzz tests generate under the soak profile.
SOAK_FACTOR = 20 if PROFILE == "soak" else 1


def load_profiles() -> None:
    """Register both profiles and load the one ``HYPOTHESIS_PROFILE`` names (conftest
    calls this once, before any test module is collected)."""
    settings.register_profile("ci", deadline=None, print_blob=True)
    settings.register_profile(
        "soak",
        deadline=None,
        print_blob=True,
        max_examples=1000,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """The example count of a fuzz test: ``n`` in CI, ``SOAK_FACTOR`` times more in a soak."""
    return n * SOAK_FACTOR
