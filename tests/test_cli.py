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
    assert list(stage.glob("events.out.tfevents.*")) and (stage / "history.csv").is_file()  # TB: the stage


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
            "[p.parse_known_args([c, 'x.yaml', '--method', 'q2l']) "
            "for c in ('train', 'evaluate', 'embeddings', 'predict', 'config')]; "
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
    # the toy params use the kit's own pretrained toy CNN, shipped inside the package
    assert weights.returncode == 0 and "toy_cnn" in weights.stdout, weights.stderr[-2000:]
    assert all(" yes " in line for line in weights.stdout.splitlines()[1:] if line.strip()), weights.stdout
    assert "toy_weights/toy_cnn_imagenet.pt" in weights.stdout
    launch = subprocess.run([sys.executable, "-m", "mlc.cli", "launch", "slurm", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert launch.returncode == 0 and "--gpus-per-node" in launch.stdout


def test_a_subcommand_s_error_prints_that_subcommand_s_usage(capsys):
    """Errors found after argparse (a word --set cannot take, a missing params file, a stray word) printed the
    usage of ``mlc`` itself."""
    from mlc.cli.args import parse
    from mlc.cli.command import build_parser
    for argv, error in [(["train", "--set", "seed", "params/toy_ci.yaml", "--method", "q2l"], "--set takes KEY=VALUE"),
                        (["evaluate"], "the following arguments are required: params"),
                        (["weights", "params/toy_ci.yaml", "stray.yaml"], "unrecognized arguments: stray.yaml"),
                        (["launch", "slurm", "p.yaml", "--method", "q2l", "--bogus"],
                         "unrecognized arguments: --bogus")]:
        with pytest.raises(SystemExit):
            parse(build_parser(), argv)
        err = capsys.readouterr().err
        usage = f"usage: mlc {' '.join(argv[:2] if argv[0] == 'launch' else argv[:1])} "
        assert err.startswith(usage) and f"error: {error}" in err, err


def test_predict_takes_its_images_anywhere_after_the_params_file(capsys):
    from mlc.cli.args import parse
    from mlc.cli.command import build_parser
    args = parse(build_parser(), ["predict", "p.yaml", "--method", "q2l", "a.png", "b/", "--top-k", "2"])
    assert (args.params, args.images, args.method, args.top_k) == (Path("p.yaml"), ["a.png", "b/"], "q2l", 2)
    args = parse(build_parser(), ["predict", "--set", "seed=1", "p.yaml", "a.png", "--method", "q2l", "b.png"])
    assert (args.params, args.images, args.set_args) == (Path("p.yaml"), ["a.png", "b.png"], ["seed=1"])
    args = parse(build_parser(), ["predict", "p.yaml", "a.png", "--set", "seed=1", "b.png", "--json"])
    assert (args.params, args.images, args.json) == (Path("p.yaml"), ["a.png", "b.png"], True)
    for argv, error in [(["predict", "p.yaml", "--method", "q2l"], "required: IMAGE"),
                        (["predict", "p.yaml", "a.png", "--top-k", "-1"], "argument --top-k: expected a whole number"),
                        (["predict", "p.yaml", "a.png", "--threshold", "2"], "between 0 and 1"),
                        (["predict", "p.yaml", "a.png", "--bogus"], "unrecognized arguments: --bogus")]:
        with pytest.raises(SystemExit):
            parse(build_parser(), argv)
        err = capsys.readouterr().err
        assert err.startswith("usage: mlc predict ") and error in err, err


def test_run_all_resolves_a_relative_output_root_once_against_the_current_folder(tmp_path, monkeypatch):
    """``mlc run-all --output-root rel`` wrote its notebooks folder under ``<kit>/rel`` while the notebook kernels
    (which run in notebooks/) wrote their runs under ``notebooks/rel``.  The pipeline is stopped before any
    notebook runs: the parent's run folder and the params the kernels get must name the same absolute root."""
    from mlc.cli.command import main
    from mlc.notebook import pipeline
    seen = {}
    monkeypatch.setattr(pipeline, "_run_graph", lambda notebooks, needs, jobs, root, out_dir, params_path, t:
                        seen.update(out_dir=out_dir, params_path=params_path, notebooks=notebooks))
    monkeypatch.setattr(pipeline, "export_html", lambda *a, **k: tmp_path / "index.html")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["run-all", str(CI), "--output-root", "rel", "--only", "01_", "--jobs", "1"])
    assert done.value.code == 0
    assert seen["out_dir"] == tmp_path / "rel" / "toy_ci" / "notebooks" and [n.name[:3] for n in seen["notebooks"]] \
        == ["01_"]
    monkeypatch.chdir(ROOT / "notebooks")                           # where the kernels run
    assert load_params(seen["params_path"]).run_dir == tmp_path / "rel" / "toy_ci"


def _config_of(argv, capsys):
    from mlc.cli.command import main
    with pytest.raises(SystemExit) as done:
        main(["config", *argv])
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


def test_mlc_config_prints_the_resolved_params_with_where_each_value_came_from(tmp_path, monkeypatch, capsys):
    import yaml

    from mlc.cli.config import resolved_params
    from mlc.config.params import params_to_dict
    f = tmp_path / "mine.yaml"
    f.write_text(f"extends: {CI}\nname: mine\noutput_root: ${{env:MLC_T_OUT}}\n")
    monkeypatch.setenv("MLC_T_OUT", "runs")
    monkeypatch.chdir(tmp_path)
    code, out, err = _config_of([str(f), "--method", "q2l", "--set", "methods.q2l.train.lr=2e-4"], capsys)
    assert code == 0, err
    params = load_params(f, set_args=["methods.q2l.train.lr=2e-4"])
    assert yaml.safe_load(out) == params_to_dict(resolved_params(params, ["q2l"]))   # valid YAML of the values
    rows, keys = {}, []
    for line in out.splitlines():
        if not line.startswith("#"):
            depth = (len(line) - len(line.lstrip())) // 2
            keys[depth:] = [line.split(":")[0].strip()]
            rows[".".join(keys)] = line
    assert rows["name"].endswith(f"# {f}:2")
    assert rows["output_root"].split("#")[0].split(": ", 1)[1].strip() == str(tmp_path / "runs")
    assert rows["output_root"].endswith(f"# {f}:3, $MLC_T_OUT, resolved")
    assert rows["methods.q2l.train.lr"].endswith("# command line (--set methods.q2l.train.lr=2e-4)")
    assert rows["methods.q2l.train.epochs"].endswith(f"# {CI}:9")                    # the extends parent
    assert rows["methods.q2l.train.pct_start"].endswith("# default")
    assert f"# files: {f}, which extends {CI}, which extends {ROOT / 'params' / 'toy.yaml'}" in out
    assert "methods.qks" not in rows
    code, out, err = _config_of([str(f), "--method", "q2k"], capsys)
    assert code == 1 and "no method 'q2k'" in err
    code, out, err = _config_of([str(f), "--set", "seed=-1"], capsys)
    assert code == 2 and "command line (--set seed=-1): seed: must be >= 0" in err


def test_mlc_config_is_listed_and_mlc_help_stays_light():
    done = subprocess.run([sys.executable, "-m", "mlc.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "    config " in done.stdout and "    predict " in done.stdout


def test_evaluate_resolves_a_relative_checkpoint_against_where_the_command_runs(tmp_path, monkeypatch, capsys):
    """``mlc evaluate P --checkpoint rel.pt`` looked for rel.pt in the params' checkout (the command moves
    there to load the params), not where the user stands."""
    from mlc.cli.evaluate import main
    monkeypatch.chdir(tmp_path)
    code = main([str(ROOT / "params" / "toy_ci.yaml"), "--method", "q2l", "--checkpoint", "mine.pt",
                 "--output-root", str(tmp_path / "out")])
    assert code == 1
    assert str(tmp_path / "mine.pt") in capsys.readouterr().err
