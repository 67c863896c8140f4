"""Notebooks are committed without outputs: scripts/git_filters.sh sets up the nbstripout filter that the committed
.gitattributes names, in throw-away git repositories (never this checkout's .git/config), and its ``--check`` mode is
the pre-commit hook."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

SCRIPT = ROOT / "scripts" / "git_filters.sh"
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _nb(outputs=True) -> dict:
    """A notebook as JupyterLab saves it after running: outputs, counts, timings, the kernel's version."""
    code = {"cell_type": "code", "execution_count": 3 if outputs else None, "id": "a1b2c3d4",
            "metadata": {"tags": ["parameters"], "execution": {"iopub.execute_input": "2024-01-01T00:00:00Z"}}
            if outputs else {"tags": ["parameters"]},
            "outputs": [{"name": "stdout", "output_type": "stream", "text": ["OUTPUT-MARKER 42\n"]},
                        {"data": {"text/plain": ["'RESULT-MARKER'"]}, "execution_count": 3, "metadata": {},
                         "output_type": "execute_result"}] if outputs else [],
            "source": ["run = 'toy'\n", "print('OUTPUT-MARKER', 42)"]}
    md = {"cell_type": "markdown", "id": "e5f6a7b8", "metadata": {}, "source": ["# Title"]}
    lang = {"name": "python", "version": "3.11.7", "mimetype": "text/x-python", "file_extension": ".py"} \
        if outputs else {"name": "python"}
    return {"cells": [md, code], "metadata": {"kernelspec": {"display_name": "Python (mlc-kit)", "language": "python",
                                                            "name": "mlc-kit"},
                                              "language_info": lang, "mlc": {"exercise": 1}},
            "nbformat": 4, "nbformat_minor": 5}


def _write(path: Path, nb: dict) -> bytes:
    data = (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode()
    path.write_bytes(data)
    return data


def _env(tmp_path: Path, **extra) -> dict:
    """No user or system git config (its filters, hooks or identity), a fixed identity, no $MLC_PY."""
    (tmp_path / "gitconfig").touch()
    env = {k: v for k, v in os.environ.items() if k not in ("MLC_PY", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    env.update(GIT_CONFIG_GLOBAL=str(tmp_path / "gitconfig"), GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com", **extra)
    return env


def _run(args, cwd, env, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    if check and r.returncode:
        pytest.fail(f"{args} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r


def _git(repo, env, *args, check=True) -> subprocess.CompletedProcess:
    return _run(["git", *args], repo, env, check)


def _setup(repo, env, python=sys.executable) -> subprocess.CompletedProcess:
    return _run(["bash", str(repo / "scripts" / "git_filters.sh"), str(repo), str(python)], repo, env, check=False)


@pytest.fixture()
def repo(tmp_path):
    """A fresh repository holding the kit's .gitattributes and scripts/git_filters.sh (the working versions)."""
    repo, env = tmp_path / "repo", _env(tmp_path)
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / ".gitattributes", repo / ".gitattributes")
    shutil.copy2(SCRIPT, repo / "scripts" / "git_filters.sh")
    _git(repo, env, "init", "-q")
    _git(repo, env, "add", ".")
    _git(repo, env, "commit", "-q", "-m", "init")
    return repo, env


def _no_python(tmp_path) -> Path:
    """A real Python without nbstripout (no site-packages)."""
    py = tmp_path / "bare-python"
    py.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -S "$@"\n')
    py.chmod(0o755)
    assert subprocess.run([str(py), "-c", "import nbstripout"], capture_output=True).returncode != 0
    return py


@pytest.mark.slow          # nbstripout, started by git a few times (about a second each)
def test_git_add_commits_the_notebook_stripped_and_the_working_file_keeps_its_outputs(repo):
    repo, env = repo
    r = _setup(repo, env)
    assert r.returncode == 0 and not r.stderr, r.stderr
    assert _git(repo, env, "config", "--local", "filter.nbstripout.required").stdout.strip() == "true"
    assert " -m nbstripout " in _git(repo, env, "config", "--local", "filter.nbstripout.clean").stdout
    assert _git(repo, env, "check-attr", "filter", "diff", "--", "nb.ipynb").stdout.split("\n")[:2] == \
        ["nb.ipynb: filter: nbstripout", "nb.ipynb: diff: ipynb"]
    config = (repo / ".git" / "config").read_bytes()
    r = _setup(repo, env)                                                  # idempotent and quiet
    assert r.returncode == 0 and not r.stderr and (repo / ".git" / "config").read_bytes() == config

    written = _write(repo / "nb.ipynb", _nb())
    _git(repo, env, "add", "nb.ipynb")
    _git(repo, env, "commit", "-q", "-m", "nb")
    committed = json.loads(_git(repo, env, "show", "HEAD:nb.ipynb").stdout)
    assert (repo / "nb.ipynb").read_bytes() == written                     # the working file keeps its outputs
    md, code = committed["cells"]
    assert code["outputs"] == [] and code["execution_count"] is None, code
    assert "execution" not in code["metadata"]                             # JupyterLab's cell timings
    assert [md["id"], code["id"]] == ["e5f6a7b8", "a1b2c3d4"]              # --keep-id: no renumbering
    assert code["metadata"]["tags"] == ["parameters"]                      # papermill's parameters cell
    assert code["source"] == ["run = 'toy'\n", "print('OUTPUT-MARKER', 42)"]
    assert committed["metadata"]["kernelspec"]["name"] == "mlc-kit"
    assert committed["metadata"]["language_info"] == {"name": "python"}    # the kernel's version details go
    assert committed["metadata"]["mlc"] == {"exercise": 1}

    # The committed notebook is a fixed point of the filter: rerun, with new outputs and counts (its timestamp
    # forces git to clean it again), the working file is unchanged for git; a change of its source shows in git
    # diff, which compares stripped notebooks (diff.ipynb.textconv), never their outputs.
    nb = _nb()
    nb["cells"][1]["outputs"][0]["text"] = ["OUTPUT-MARKER 43\n"]
    nb["cells"][1]["execution_count"] = 7
    _write(repo / "nb.ipynb", nb)
    st = (repo / "nb.ipynb").stat()
    os.utime(repo / "nb.ipynb", (st.st_atime + 10, st.st_mtime + 10))
    assert _git(repo, env, "status", "--porcelain").stdout == ""
    nb["cells"][1]["source"][0] = "run = 'toy_ci'\n"
    _write(repo / "nb.ipynb", nb)
    diff = _git(repo, env, "diff", "nb.ipynb").stdout
    assert "-    \"run = 'toy'\\n\",\n+    \"run = 'toy_ci'\\n\",\n" in diff, diff
    assert "MARKER 43" not in diff and "execution_count" not in diff, diff


@pytest.mark.slow          # nbstripout, started by git a few times (about a second each)
def test_the_pre_commit_hook_refuses_a_notebook_staged_with_outputs(repo):
    """Without the filter (another clone, set up before it existed) a notebook is staged as it is: the hook that
    .pre-commit-config.yaml names fails and names it; staged stripped, it passes."""
    repo, env = repo
    hooks = {h["id"]: h for r in yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
             for h in r["hooks"]}
    hook = hooks["notebooks-without-outputs"]
    entry = shlex.split(hook["entry"])
    assert hook["language"] in ("script", "system") and (ROOT / entry[0]).resolve() == SCRIPT.resolve()
    assert os.access(SCRIPT, os.X_OK)                                       # language: script runs it as it is
    assert re.search(hook["files"], "notebooks/10_train_q2l.ipynb") and not re.search(hook["files"], "lib/a.py")
    check_env = {**env, "MLC_PY": sys.executable}

    assert _git(repo, env, "config", "--local", "--get", "filter.nbstripout.clean", check=False).returncode == 1
    _write(repo / "dirty.ipynb", _nb())
    _write(repo / "clean.ipynb", _nb(outputs=False))
    _git(repo, env, "add", "dirty.ipynb", "clean.ipynb")
    assert '"OUTPUT-MARKER 42\\n"' in _git(repo, env, "show", ":dirty.ipynb").stdout   # staged as it is
    r = _run([*entry, "clean.ipynb", "dirty.ipynb"], repo, check_env, check=False)
    assert r.returncode != 0 and "dirty.ipynb" in r.stderr and "clean.ipynb" not in r.stderr, r.stderr

    assert "git add --renormalize dirty.ipynb" in r.stderr, r.stderr

    # as it says: the filter set up, staged again, it passes; the working file keeps its outputs (the check reads
    # what is staged, never the working file)
    written = (repo / "dirty.ipynb").read_bytes()
    assert _setup(repo, env).returncode == 0
    _git(repo, env, "add", "--renormalize", "dirty.ipynb")
    r = _run([*entry, "dirty.ipynb"], repo, check_env, check=False)
    assert r.returncode == 0, r.stderr
    assert (repo / "dirty.ipynb").read_bytes() == written


def test_without_nbstripout_the_set_up_leaves_git_alone_with_a_warning(repo, tmp_path):
    repo, env = repo
    bare = _no_python(tmp_path)
    r = _setup(repo, env, bare)
    assert r.returncode == 0 and "warning" in r.stderr and "nbstripout" in r.stderr, r.stderr
    assert _git(repo, env, "config", "--local", "--get-regexp", "nbstripout|ipynb", check=False).stdout == ""
    _write(repo / "nb.ipynb", _nb())                     # git works as without the kit: outputs are committed
    _git(repo, env, "add", "nb.ipynb")
    _git(repo, env, "commit", "-q", "-m", "nb")
    assert "OUTPUT-MARKER 42" in _git(repo, env, "show", "HEAD:nb.ipynb").stdout
    r = _run(["bash", "scripts/git_filters.sh", "--check", "nb.ipynb"], repo, {**env, "MLC_PY": str(bare)},
             check=False)                                # the hook cannot check: it says so and fails
    assert r.returncode != 0 and "nbstripout is not installed" in r.stderr, r.stderr


@pytest.mark.slow          # nbstripout, started by git a few times (about a second each)
def test_a_filter_set_up_by_another_environment_is_kept_while_it_runs_and_removed_once_it_cannot(repo, tmp_path):
    repo, env = repo
    other = tmp_path / "other-env-python"                # another environment's Python, with nbstripout
    other.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    other.chmod(0o755)
    assert _setup(repo, env, other).returncode == 0
    config = (repo / ".git" / "config").read_bytes()
    assert str(other).encode() in config
    r = _setup(repo, env, _no_python(tmp_path))          # e.g. a conda environment without nbstripout
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert (repo / ".git" / "config").read_bytes() == config

    _write(repo / "nb.ipynb", _nb())
    _git(repo, env, "add", "nb.ipynb")
    _git(repo, env, "commit", "-q", "-m", "nb")
    other.unlink()                                       # its environment is removed: the required filter fails
    st = (repo / "nb.ipynb").stat()
    os.utime(repo / "nb.ipynb", (st.st_atime + 10, st.st_mtime + 10))
    assert _git(repo, env, "status", "--porcelain", check=False).returncode != 0
    r = _setup(repo, env, _no_python(tmp_path))
    assert r.returncode == 0 and "removed" in r.stderr and str(other) in r.stderr, r.stderr
    assert _git(repo, env, "config", "--local", "--get-regexp", "nbstripout|ipynb", check=False).stdout == ""
    assert _git(repo, env, "status", "--porcelain").returncode == 0      # git works again
    r = _setup(repo, env)                                # a Python with nbstripout sets it up again
    assert r.returncode == 0 and not r.stderr
    assert sys.executable in _git(repo, env, "config", "--local", "filter.nbstripout.clean").stdout


def test_setting_up_refreshes_the_index_so_that_the_first_git_status_needs_no_filter(repo):
    """A fresh clone's notebooks are racily clean: without a refresh, the first `git status` (the one a run's
    environment.json asks for, with a timeout) would start nbstripout for every notebook."""
    repo, env = repo
    _write(repo / "nb.ipynb", _nb(outputs=False))       # committed before the filter was set up
    _git(repo, env, "add", "nb.ipynb")
    _git(repo, env, "commit", "-q", "-m", "nb")
    st = (repo / "nb.ipynb").stat()                     # its stat data no longer match the index
    os.utime(repo / "nb.ipynb", (st.st_atime + 10, st.st_mtime + 10))
    assert _git(repo, env, "diff-files", "--name-only").stdout.split() == ["nb.ipynb"]
    assert _setup(repo, env).returncode == 0
    assert _git(repo, env, "diff-files", "--name-only").stdout == ""  # refreshed: git knows it is unchanged


def test_outside_a_git_checkout_or_inside_another_repository_the_set_up_does_nothing(tmp_path):
    env = _env(tmp_path)
    plain = tmp_path / "tarball"
    (plain / "scripts").mkdir(parents=True)
    shutil.copy2(SCRIPT, plain / "scripts" / "git_filters.sh")
    r = _setup(plain, env)
    assert r.returncode == 0 and r.stderr == "" and not (plain / ".git").exists()
    outer = tmp_path / "project"                         # the kit copied into another project's repository
    _git(tmp_path, env, "init", "-q", str(outer))
    shutil.copytree(plain, outer / "mlc-kit")
    r = _setup(outer / "mlc-kit", env)
    assert r.returncode == 0 and r.stderr == ""
    assert _git(outer, env, "config", "--local", "--get-regexp", "nbstripout|ipynb", check=False).stdout == ""


def _tracked_notebooks() -> list[str]:
    r = subprocess.run(["git", "ls-files", "-z", "--", "*.ipynb"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    if r.returncode:
        pytest.skip(f"{ROOT} is not a git checkout")
    return sorted(p for p in r.stdout.split("\0") if p)


def test_every_committed_notebook_is_already_stripped_by_the_filter(repo, tmp_path):
    """A fresh clone (CI's) sets the filter up: a committed notebook that the filter would change shows as modified
    in `git status` there, and counts as a local change ("+dirty" in a run's environment.json). The index holds
    what is committed, or about to be."""
    repo, env = repo
    assert _setup(repo, env).returncode == 0
    clean = _git(repo, env, "config", "--local", "filter.nbstripout.clean").stdout.strip()
    notebooks = _tracked_notebooks()
    assert any(p.startswith("notebooks/") for p in notebooks), notebooks
    blobs, copies = {}, tmp_path / "blobs"
    copies.mkdir()
    for i, path in enumerate(notebooks):
        blobs[path] = subprocess.run(["git", "show", f":{path}"], cwd=ROOT, capture_output=True, timeout=60,
                                     check=True).stdout
        (copies / f"{i}.ipynb").write_bytes(blobs[path])
    # the filter's own command, given the copies to strip in place (one Python for all; the bytes are those it
    # writes to git from its standard input)
    files = [str(copies / f"{i}.ipynb") for i in range(len(notebooks))]
    _run(["sh", "-c", clean + ' "$@"', "sh", *files], repo, env)
    not_fixed = [path for i, path in enumerate(notebooks) if (copies / f"{i}.ipynb").read_bytes() != blobs[path]]
    assert not not_fixed, f"committed with what the filter strips (git add them again with the filter set up): " \
                          f"{not_fixed}"
