"""The kit as a package: a wheel built from the checkout, installed into a fresh virtual environment, carries
its data files and its console scripts (no editable install, no checkout on the path)."""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, bin dir) of a fresh venv with the kit's wheel; the heavy dependencies come from this
    environment's site-packages through a .pth file (nothing is downloaded)."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp / "dist")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    wheel = next((tmp / "dist").glob("mlc_kit-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, timeout=300)
    py = tmp / "venv" / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "zz_host_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    return py, tmp / "venv" / "bin"


@pytest.mark.slow
def test_wheel_carries_the_clip_config_the_paper_numbers_and_the_toy_weights(installed, tmp_path):
    py, _ = installed
    code = ("import mlc, open_clip, pandas as pd\n"
            "from mlc.modeling.clip import _register_configs\n"
            "from mlc.evaluation.report import PAPER_NUMBERS\n"
            "_register_configs()\n"
            "cfg = open_clip.get_model_config('mlc-toy-clip')\n"
            "papers = pd.read_csv(PAPER_NUMBERS)\n"
            "print(mlc.__file__)\n"
            "print(cfg['embed_dim'], len(papers), sorted(set(papers['paper'])))\n"
            "from mlc.modeling.backbones import create_backbone\n"          # the shipped toy ImageNet weights
            "create_backbone('toy_cnn', pretrained=True)\n")
    run = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr[-2000:]
    where, numbers = run.stdout.splitlines()
    assert str(py.parent.parent) in where and str(ROOT) not in where        # the installed copy, not the checkout
    assert numbers.startswith("128 ") and "'Q2L'" in numbers


@pytest.mark.slow
@pytest.mark.parametrize("command", [["mlc", "--help"], ["mlc", "train", "--help"], ["mlc", "evaluate", "--help"],
                                     ["mlc", "embeddings", "--help"], ["mlc", "run-all", "--help"],
                                     ["mlc-train", "--help"], ["mlc-run-all", "--help"]])
def test_every_console_script_answers_help(installed, command, tmp_path):
    _, bin_dir = installed
    run = subprocess.run([str(bin_dir / command[0]), *command[1:]], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage:" in run.stdout


def test_console_scripts_of_pyproject_are_the_ones_tested():
    import tomllib
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"mlc", "mlc-train", "mlc-run-all"}
