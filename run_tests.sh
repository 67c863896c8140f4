#!/usr/bin/env bash
# Runs the whole test suite (unit tests + every notebook under papermill on the smallest toy params).
# Extra arguments go to pytest, e.g. ./run_tests.sh -k metrics
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/env.sh"
cd "$MLC_ROOT"
exec "$MLC_PY" -m pytest "$@"
