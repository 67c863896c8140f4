#!/usr/bin/env bash
# Opens JupyterLab at the repository root, in the kit's environment (the one run_all.sh and run_tests.sh use).
#   ./run_lab.sh                 # http://localhost:8888/lab/tree/notebooks (the token is printed)
#   ./run_lab.sh --port 8899     # any JupyterLab option
# The file browser starts in notebooks/, one click below params/ and outputs/<run>/ (figures, result.json).
# Terminals start at the root with the environment's bin/ first on PATH (`mlc train params/toy.yaml ...` works as
# the notebooks write it), and so do kernels (the mlc-kit kernel's spec also puts it there, whatever Jupyter
# starts it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/env.sh"
cd "$MLC_ROOT"
export PATH="$MLC_BIN:$PATH"
root_flag=()
[ "$(id -u)" = 0 ] && root_flag=(--allow-root)     # containers often run as root; JupyterLab refuses it otherwise
# Terminals: bash reading scripts/lab_bashrc (the user's ~/.bashrc, then $MLC_BIN first on PATH), not the login
# shell JupyterLab starts when it has no terminal of its own, whose /etc/profile may reset PATH.
terminals="{\"shell_command\": [\"bash\", \"--rcfile\", \"$MLC_ROOT/scripts/lab_bashrc\", \"-i\"]}"
exec "$MLC_PY" -m jupyterlab --ServerApp.root_dir="$MLC_ROOT" --LabApp.default_url=/lab/tree/notebooks \
    --ServerApp.terminado_settings="$terminals" "${root_flag[@]}" "$@"
