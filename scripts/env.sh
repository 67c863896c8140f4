# Sourced by run_all.sh, run_tests.sh and run_lab.sh: picks the Python environment to use and sets $MLC_PY (and
# $MLC_BIN, its bin/), registers the kit's Jupyter kernel and sets up the notebook git filter of this clone.
#
# * An active conda environment (other than base) or virtual environment is used as it is
#   (make one from environment.yml; it installs the kit with `pip install -e .`).
# * Otherwise a local virtual environment .venv/ is created from pyproject.toml and refreshed
#   whenever the dependency lists in pyproject.toml change.
set -euo pipefail
MLC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MLC_VENV="$MLC_ROOT/.venv"

_mlc_active_env=""
if [ -n "${VIRTUAL_ENV:-}" ] && [ "$(cd "$VIRTUAL_ENV" 2>/dev/null && pwd)" != "$MLC_VENV" ]; then
    _mlc_active_env="$VIRTUAL_ENV"
elif [ -n "${CONDA_PREFIX:-}" ] && [ "${CONDA_DEFAULT_ENV:-base}" != "base" ]; then
    _mlc_active_env="$CONDA_PREFIX"
fi

if [ -n "$_mlc_active_env" ]; then
    MLC_PY="$(command -v python)"
    if ! "$MLC_PY" -c "import mlc" 2>/dev/null; then
        echo "error: the active environment $_mlc_active_env has no 'mlc' package." >&2
        echo "       Install the kit into it with:  pip install -e '$MLC_ROOT[dev]'" >&2
        echo "       (or deactivate it to let this script build $MLC_VENV)" >&2
        exit 1
    fi
else
    _mlc_py3="$(command -v python3 || true)"
    if [ -z "$_mlc_py3" ]; then
        echo "error: python3 not found; install Python >= 3.10 first" >&2
        exit 1
    fi
    # Stamp = hash of the dependency lists (not of the whole file: a changed description needs no reinstall).
    _mlc_stamp="$("$_mlc_py3" - "$MLC_ROOT/pyproject.toml" <<'PY'
import hashlib, json, sys
text = open(sys.argv[1], "rb").read()
try:
    import tomllib
    project = tomllib.loads(text.decode())["project"]
    text = json.dumps([project.get("dependencies"), project.get("optional-dependencies")]).encode()
except ImportError:  # Python < 3.11: hash the whole file
    pass
print(hashlib.sha256(text).hexdigest())
PY
)"
    if [ ! -x "$MLC_VENV/bin/python" ] || [ "$(cat "$MLC_VENV/.mlc-deps-stamp" 2>/dev/null)" != "$_mlc_stamp" ]; then
        echo ">> setting up $MLC_VENV from pyproject.toml (first run or dependencies changed; takes a few minutes)" >&2
        if [ ! -x "$MLC_VENV/bin/python" ]; then
            "$_mlc_py3" -m venv --clear "$MLC_VENV"
        fi
        "$MLC_VENV/bin/python" -m pip install --quiet --upgrade pip >&2
        "$MLC_VENV/bin/python" -m pip install --quiet -e "$MLC_ROOT[dev]" >&2
        echo "$_mlc_stamp" > "$MLC_VENV/.mlc-deps-stamp"
        echo ">> environment ready" >&2
    fi
    MLC_PY="$MLC_VENV/bin/python"
fi
# The environment's bin/ (its `mlc`, `python`, `torchrun`): run_lab.sh puts it first on PATH in the Lab's
# terminals and kernels.
MLC_BIN="$(dirname "$MLC_PY")"
# The kit's Jupyter kernel ("Python (mlc-kit)", the kernel the notebooks name), registered for this user so
# that any JupyterLab opens the notebooks in this environment, with its bin/ first on PATH (`!mlc train ...` in a
# notebook, whichever Jupyter started the kernel); re-registered when it points elsewhere.
_mlc_kernel="${JUPYTER_DATA_DIR:-$HOME/.local/share/jupyter}/kernels/mlc-kit/kernel.json"
if ! grep -qF "\"$MLC_PY\"" "$_mlc_kernel" 2>/dev/null || ! grep -qF "\"$MLC_BIN:\${PATH}\"" "$_mlc_kernel"; then
    "$MLC_PY" -m ipykernel install --user --name mlc-kit --display-name "Python (mlc-kit)" \
        --env PATH "$MLC_BIN:\${PATH}" >/dev/null 2>&1 \
        || echo "warning: could not register the mlc-kit Jupyter kernel" >&2
fi
# Notebooks are committed without outputs: the nbstripout git filter, in this clone only (a few seconds the first
# time, in a fresh clone; quiet and instant once set up; nothing without git, nbstripout or a .git folder).
bash "$MLC_ROOT/scripts/git_filters.sh" "$MLC_ROOT" "$MLC_PY" || true
export MLC_PY MLC_ROOT MLC_BIN
