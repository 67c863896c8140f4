#!/usr/bin/env bash
# Runs the linter (ruff) and the whole test suite (unit tests + every notebook under papermill on the smallest
# toy params). Extra arguments go to pytest, e.g. ./run_tests.sh -k metrics, or ./run_tests.sh -m "not slow"
# for the fast inner loop (no training subprocesses, notebooks or servers); -n 0 runs in one process.
#
# The tests run in one process per core (pytest-xdist, at most 4), a test file per process: most of the suite's
# time is subprocesses starting, kernels launching and servers waiting, which leaves cores idle in one process
# (serial on 2 cores: 1,043 s, 1.3 cores busy; two processes: 723 s). A file stays in one process so that its
# module fixtures (the notebook run every notebook test reads) run once.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/env.sh"
cd "$MLC_ROOT"
"$MLC_PY" -m ruff check lib tests benchmarks scripts
exec "$MLC_PY" -m pytest --numprocesses auto --maxprocesses 4 --dist loadfile "$@"
