#!/usr/bin/env bash
# Opens JupyterLab on the notebooks, in the kit's environment (the one run_all.sh and run_tests.sh use).
#   ./run_lab.sh                 # http://localhost:8888/lab (the token is printed)
#   ./run_lab.sh --port 8899     # any JupyterLab option
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/env.sh"
cd "$MLC_ROOT"
root_flag=()
[ "$(id -u)" = 0 ] && root_flag=(--allow-root)     # containers often run as root; JupyterLab refuses it otherwise
exec "$MLC_PY" -m jupyterlab --ServerApp.root_dir="$MLC_ROOT/notebooks" "${root_flag[@]}" "$@"
