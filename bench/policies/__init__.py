"""The policies under test, by the name the tables use."""

from __future__ import annotations

from bench.harness import Policy
from bench.policies import forgejo128, gitlab, ours

POLICIES: dict[str, Policy] = {
    "ours": ours.run,
    "forgejo-12.8": forgejo128.run,
    "gitlab": gitlab.run,
}

__all__ = ["POLICIES"]
