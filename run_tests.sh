#!/usr/bin/env bash
# Runs the linter (ruff) and the whole test suite (unit tests + every notebook under papermill on the smallest
# toy params). Extra arguments go to pytest, e.g. ./run_tests.sh -k metrics, or ./run_tests.sh -m "not slow"
# for the fast inner loop (no training subprocesses, notebooks or servers).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/env.sh"
cd "$MLC_ROOT"
"$MLC_PY" -m ruff check lib tests benchmarks scripts
exec "$MLC_PY" -m pytest "$@"
