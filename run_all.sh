#!/usr/bin/env bash
# Executes every notebook in order through papermill for one params file (default: the toy world)
# and writes the executed copies into outputs/<run name>/notebooks/.
#   ./run_all.sh                       # params/toy.yaml
#   ./run_all.sh params/toy_ci.yaml    # the smallest toy world (what the tests run)
# Stops at the first failing notebook with a non-zero exit that names it and its executed copy.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/env.sh"
cd "$MLC_ROOT"
exec "$MLC_PY" -m mlc.pipeline "${1:-params/toy.yaml}" "${@:2}"
