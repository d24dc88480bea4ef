#!/usr/bin/env python3
"""Run the live Prometheus check and write its table to docs/prometheus-live-check.txt.

The table lists every PromQL expression of grafana/dashboard.json and prometheus/rules/
with the number of series a real Prometheus returned for it while scraping a running
forgejo-scheduler (see tests/test_prometheus_live.py). Needs Debian's prometheus package
(scripts/install-test-tools.sh). Usage: .venv/bin/python scripts/prometheus-live-check.py [OUT]
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "prometheus-live-check.txt")
    out = out.resolve()
    test = "tests/test_prometheus_live.py::test_every_dashboard_and_rule_expression"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test],
        cwd=ROOT,
        env={**os.environ, "PROMETHEUS_LIVE_TABLE": str(out)},
        check=False,
    )
    if proc.returncode != 0:
        return proc.returncode
    if not out.exists():
        print("the test did not write the table (skipped? see above)", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
