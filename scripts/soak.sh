#!/usr/bin/env bash
# The reliability soak (issue 4): >= 10,000 FetchTask calls over three simulated
# instances, 20 % respond-then-drop, 5 % 5xx, kill -9 and restart every minute.
# Takes about 12-15 minutes on 2 cores (about 12 FetchTask calls per second). Not part of the default test run.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/soak.py "$@"
