"""The command line: --set overrides validated like the file, ${env:...} values, paths that do not depend on
the current folder."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from mlc.config.params import ParamsError, base_dir_of, load_params

CI = ROOT / "params" / "toy_ci.yaml"


def test_set_overrides_apply_and_are_validated_naming_the_command_line():
    p = load_params(CI, set_args=["methods.q2l.train.lr=2e-4", "seed=3", "data.toy={n_train: 10, n_val: 5, n_test: 5}"])
    assert p.methods["q2l"].train.lr == 2e-4 and p.seed == 3 and p.data.toy.n_train == 10
    with pytest.raises(ParamsError, match=r"^command line \(--set methods.q2l.train.lr=-1\): methods.q2l.train.lr: "
                                          r"must be > 0"):
        load_params(CI, set_args=["methods.q2l.train.lr=-1"])
    with pytest.raises(ParamsError, match=r"command line \(--set methods.q2l.train.lrr=1\): .*unknown key 'lrr' "
                                          r"\(did you mean 'lr'\?\)"):
        load_params(CI, set_args=["methods.q2l.train.lrr=1"])
    with pytest.raises(ParamsError, match=r"command line \(--set seed\): expected KEY=VALUE"):
        load_params(CI, set_args=["seed"])


def test_environment_variables_in_values(tmp_path, monkeypatch):
    f = tmp_path / "env.yaml"
    f.write_text(f"extends: {CI}\ndata:\n  raw_root: ${{env:MLC_TEST_COCO}}/coco\n  root: ${{env:MLC_NOPE:-/tmp/w}}\n")
    monkeypatch.setenv("MLC_TEST_COCO", "/data")
    p = load_params(f)
    assert p.data.raw_root == "/data/coco" and p.data.root == "/tmp/w"
    monkeypatch.delenv("MLC_TEST_COCO")
    with pytest.raises(ParamsError, match=r"env.yaml:3: data.raw_root: environment variable MLC_TEST_COCO is not set"):
        load_params(f)


def test_relative_paths_do_not_depend_on_the_current_folder(tmp_path, monkeypatch):
    assert base_dir_of(ROOT / "params" / "q2l" / "coco_r101_448.yaml") == ROOT      # the checkout
    f = tmp_path / "conf" / "run.yaml"                                              # outside a checkout: its folder
    f.parent.mkdir()
    f.write_text(f"extends: {CI}\noutput_root: out\n")
    for cwd in (tmp_path, ROOT / "notebooks", "/"):
        monkeypatch.chdir(cwd)
        assert load_params(f).run_dir == tmp_path / "conf" / "out" / "toy_ci"
        assert load_params(CI).run_dir == ROOT / "outputs" / "toy_ci"
    monkeypatch.setenv("MLC_OUTPUT_ROOT", str(tmp_path / "elsewhere"))
    assert load_params(CI).run_dir == tmp_path / "elsewhere" / "toy_ci"
    assert load_params(CI, output_root=str(tmp_path / "flag")).run_dir == tmp_path / "flag" / "toy_ci"


@pytest.mark.slow
def test_mlc_train_from_another_folder_writes_into_the_params_outputs(tmp_path):
    f = tmp_path / "conf" / "run.yaml"
    f.parent.mkdir()
    f.write_text(f"extends: {CI}\nname: cli\noutput_root: out\ndata:\n  root: world\n"
                 f"  toy: {{n_train: 32, n_val: 16, n_test: 16}}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run([sys.executable, "-m", "mlc.cli", "train", str(f), "--method", "q2l",
                          "--set", "methods.q2l.train.epochs=1"], cwd=elsewhere, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "2"}, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    stage = tmp_path / "conf" / "out" / "cli" / "q2l"
    assert (stage / "result.json").is_file() and not list(elsewhere.iterdir())
    assert "[q2l] test mAP" in (stage / "train.log").read_text()
    assert list((stage / "tensorboard").glob("events.out.tfevents.*")) and (stage / "history.csv").is_file()


def test_a_relative_output_root_on_the_command_line_is_relative_to_where_the_command_runs(tmp_path, monkeypatch):
    """``--output-root myruns`` run from another folder wrote to ``<kit>/myruns`` without saying so."""
    import argparse

    from mlc.cli.args import add_params_arguments
    from mlc.cli.load import load_from_args
    ap = argparse.ArgumentParser()
    add_params_arguments(ap)
    monkeypatch.chdir(tmp_path)
    params = load_from_args(ap.parse_args([str(CI), "--output-root", "myruns"]))
    assert params.run_dir == tmp_path / "myruns" / "toy_ci"


def test_the_mlc_parser_imports_neither_torch_nor_the_library_it_dispatches_to():
    """``mlc --help`` and every subcommand's ``--help`` build only the parser: the handlers (and torch) are
    imported when a command runs.  Its speed is measured by benchmarks/cli_help.py, not here."""
    code = ("import sys; from mlc.cli.command import build_parser; p = build_parser(); "
            "[p.parse_known_args([c, 'x.yaml', '--method', 'q2l']) for c in ('train', 'evaluate', 'embeddings')]; "
            "print(sorted(m for m in ('torch', 'numpy', 'mlc.cli.handlers', 'mlc.runs.train') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_params_file_may_follow_the_overrides():
    """``mlc train --set methods.q2l.train.epochs=1 params/toy_ci.yaml --method q2l`` failed: ``--set`` took the
    params file as one more override."""
    from mlc.cli.args import parse
    from mlc.cli.command import build_parser
    args = parse(build_parser(), ["train", "--set", "methods.q2l.train.epochs=1", "params/toy_ci.yaml",
                                  "--method", "q2l"])
    assert args.params == Path("params/toy_ci.yaml") and args.set_args == ["methods.q2l.train.epochs=1"]
    args = parse(build_parser(), ["run-all", "--set", "seed=1"])                    # run-all's default params
    assert args.params == Path("params/toy.yaml") and args.set_args == ["seed=1"]
    with pytest.raises(SystemExit):
        parse(build_parser(), ["train", "--set", "seed", "params/toy_ci.yaml", "--method", "q2l"])


def test_mlc_version_weights_and_launch_are_subcommands_of_the_one_command(tmp_path):
    version = subprocess.run([sys.executable, "-m", "mlc.cli", "--version"], capture_output=True, text=True,
                             timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("mlc-kit 0.")
    weights = subprocess.run([sys.executable, "-m", "mlc.cli", "weights", str(CI), "--list"], capture_output=True,
                             text=True, timeout=300, cwd=tmp_path)
    assert weights.returncode == 0 and "needs no pretrained weights" in weights.stdout, weights.stderr[-2000:]
    launch = subprocess.run([sys.executable, "-m", "mlc.cli", "launch", "slurm", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert launch.returncode == 0 and "--gpus-per-node" in launch.stdout
