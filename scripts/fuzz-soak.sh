#!/usr/bin/env bash
# Fuzz soak: the fuzz tests with the hypothesis "soak" profile (20x the CI example counts,
# see tests/support/profiles.py), with hypothesis' statistics so the case counts are printed.
#
#   scripts/fuzz-soak.sh                 # all fuzz tests
#   scripts/fuzz-soak.sh -k config       # extra pytest arguments pass through
#   SOAK_SEED=123 scripts/fuzz-soak.sh   # a fixed hypothesis seed (default: random)
#
# Not part of the default test run; takes minutes (about 20x the CI fuzz time).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
args=(-q -p no:randomly --hypothesis-show-statistics)
if [[ -n "${SOAK_SEED:-}" ]]; then
    args+=(--hypothesis-seed="$SOAK_SEED")
fi
HYPOTHESIS_PROFILE=soak exec "$PYTHON" -m pytest "${args[@]}" \
    tests/test_fuzz_messages.py tests/test_fuzz_http.py tests/test_fuzz_config.py \
    tests/test_fuzz_service.py "$@"
