#!/usr/bin/env bash
# Rebuild the whole leaderboard from a fresh clone: install the project (make's install step,
# which creates .venv), then run every baseline, bound and committed learned policy on every
# suite again and write LEADERBOARD.md and leaderboard/index.html. Extra arguments go to
# `schedgym leaderboard` (e.g. --env jobshop, --workers 2, --case-budget 10).
# Suites that read reference data need ../shared/data or $SCHEDGYM_DATA; without it they are
# skipped with the reason. Time on a 2-core machine: docs/leaderboard.md ("Rebuilding").
set -euo pipefail
cd "$(dirname "$0")/.."
make .venv/.installed
start=$(date +%s)
.venv/bin/schedgym leaderboard --rerun "$@"
echo "leaderboard rebuilt in $(( $(date +%s) - start )) s"
