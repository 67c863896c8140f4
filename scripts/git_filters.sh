#!/usr/bin/env bash
# Notebooks are committed without outputs: nbstripout as a git filter, set up for one clone only.
#
#   scripts/git_filters.sh [REPO [PYTHON]]   set up the filter in REPO's .git/config (default: this checkout, with
#                                            $MLC_PY or REPO/.venv/bin/python); scripts/env.sh runs it every time.
#   scripts/git_filters.sh --check FILE...   the pre-commit hook: fails if a staged notebook still has outputs.
#
# The committed .gitattributes names the filter (`*.ipynb filter=nbstripout diff=ipynb`); this writes what it
# runs, the way `nbstripout --install` does but with the kit's options (below) and without touching attributes:
#   filter.nbstripout.clean      "<python>" -m nbstripout <options>   (git add / commit store the stripped notebook)
#   filter.nbstripout.smudge     cat                                  (checkouts are left as they are)
#   filter.nbstripout.required   true                                 (a broken filter stops `git add`, never lets
#                                                                      outputs through)
#   diff.ipynb.textconv          "<python>" -m nbstripout -t <options> (git diff compares stripped notebooks)
# The working file keeps its outputs. Setting up is quiet and idempotent, and never fails: without git, outside a
# git checkout (a tarball), inside another project's repository, or without nbstripout it leaves git alone (the
# last with a warning while no filter is set up; a filter whose Python is gone is removed, with a warning, since
# a required filter that cannot run stops `git status` and `git add` of every notebook).
set -uo pipefail

# --keep-id: the cell ids stay (nbstripout would renumber them 0, 1, ...). The extra keys are what running a
# notebook in JupyterLab adds besides outputs, counts and nbstripout's own list (cell timings, collapsed or
# scrolled outputs, widget state): the kernel's version details (language_info keeps its name) and collapsed
# headings. Kept: cell tags (the papermill `parameters` cell), kernelspec, the notebook's `mlc` metadata.
_mlc_extra_keys="metadata.language_info.version metadata.language_info.codemirror_mode"
_mlc_extra_keys+=" metadata.language_info.file_extension metadata.language_info.mimetype"
_mlc_extra_keys+=" metadata.language_info.nbconvert_exporter metadata.language_info.pygments_lexer"
_mlc_extra_keys+=" cell.metadata.jp-MarkdownHeadingCollapsed"
NBSTRIPOUT_OPTIONS=(--keep-id --extra-keys "$_mlc_extra_keys")

_mlc_here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

_mlc_python() {  # the Python that runs nbstripout: $1, else $MLC_PY, else <repo>/.venv/bin/python, else python3
    local repo="$1" py="${2:-}"
    [ -n "$py" ] || py="${MLC_PY:-}"
    [ -n "$py" ] || { [ -x "$repo/.venv/bin/python" ] && py="$repo/.venv/bin/python"; }
    [ -n "$py" ] || py="$(command -v python3 || true)"
    echo "$py"
}

if [ "${1:-}" = "--check" ]; then
    # pre-commit passes the staged notebooks; their staged blobs (what the commit will hold) must already be
    # stripped. The working files are not touched: with the filter set up they keep their outputs.
    shift
    py="$(_mlc_python "$_mlc_here")"
    if ! "$py" -c "import nbstripout" 2>/dev/null; then
        echo "nbstripout is not installed in ${py:-any Python}, so the staged notebooks cannot be checked:" >&2
        echo "run ./run_tests.sh (it builds .venv, with nbstripout) or pip install nbstripout" >&2
        exit 1
    fi
    bad=()
    for f in "$@"; do
        git cat-file -e ":$f" 2>/dev/null || continue          # not staged (deleted)
        git show ":$f" | "$py" -m nbstripout --verify "${NBSTRIPOUT_OPTIONS[@]}" >/dev/null 2>&1 || bad+=("$f")
    done
    if [ "${#bad[@]}" -gt 0 ]; then
        echo "staged with outputs: ${bad[*]}" >&2
        echo "Set up the nbstripout filter of this clone (bash scripts/git_filters.sh; ./run_tests.sh does it)," >&2
        echo "then stage them again: git add --renormalize ${bad[*]}" >&2
        echo "(the filter strips what is staged and leaves your working files, outputs and all, as they are)" >&2
        exit 1
    fi
    exit 0
fi

repo="${1:-$_mlc_here}"
command -v git >/dev/null 2>&1 || exit 0
top="$(git -C "$repo" rev-parse --show-toplevel 2>/dev/null)" || exit 0
[ "$top" -ef "$repo" ] || exit 0        # the kit copied into another project's repository: not ours to configure
py="$(_mlc_python "$repo" "${2:-}")"

_mlc_q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }   # single-quoted for the shell git runs the filter with
options="--keep-id --extra-keys $(_mlc_q "$_mlc_extra_keys")"
clean="$(_mlc_q "$py") -m nbstripout $options"
wanted=(
    "filter.nbstripout.clean" "$clean"
    "filter.nbstripout.smudge" "cat"
    "filter.nbstripout.required" "true"
    "diff.ipynb.textconv" "$(_mlc_q "$py") -m nbstripout -t $options"
)
todo=()
for ((i = 0; i < ${#wanted[@]}; i += 2)); do
    [ "$(git -C "$repo" config --local --get "${wanted[i]}" 2>/dev/null)" = "${wanted[i+1]}" ] \
        || todo+=("${wanted[i]}" "${wanted[i+1]}")
done
[ "${#todo[@]}" -eq 0 ] && exit 0       # already set up: the usual case, no Python started

if ! "$py" -c "import nbstripout" 2>/dev/null; then
    # Leave a filter that another environment set up while it still runs; warn only while none is.
    current="$(git -C "$repo" config --local --get filter.nbstripout.clean 2>/dev/null)"
    if [ -z "$current" ]; then
        echo "warning: nbstripout is not installed in ${py:-any Python}, so git would commit notebook outputs" >&2
        echo "         (pip install nbstripout, then rerun; .venv and environment.yml include it)" >&2
    # (through cat: nbstripout truncates its output, which /dev/null refuses)
    elif ! printf '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n' \
            | (cd "$top" && sh -c "$current" 2>/dev/null) | cat >/dev/null; then
        # Its environment is gone (a deleted .venv, a moved clone): being required, it would make git refuse
        # `git add` and `git status` of every notebook. Taken out, so that git works again, with a warning.
        git -C "$repo" config --local --remove-section filter.nbstripout 2>/dev/null
        git -C "$repo" config --local --unset-all diff.ipynb.textconv 2>/dev/null
        echo "warning: removed this clone's nbstripout git filter: it no longer runs ($current)," >&2
        echo "         and nbstripout is not installed in ${py:-any Python} either, so git would commit notebook" >&2
        echo "         outputs (pip install nbstripout, then rerun; .venv and environment.yml include it)" >&2
    fi
    exit 0
fi
for ((i = 0; i < ${#todo[@]}; i += 2)); do
    git -C "$repo" config --local "${todo[i]}" "${todo[i+1]}" || exit 0
done
# A fresh clone's notebooks are "racily clean" (written in the second its index was): the first `git status`
# after this would run the filter over every one of them (a Python start each, a few seconds in all, longer than
# the timeout of the `git status` a run's environment.json asks for). Done once here, the index remembers them.
git -C "$repo" update-index -q --refresh >/dev/null 2>&1
exit 0
