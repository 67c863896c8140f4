"""pyproject.toml and environment.yml name the same dependencies; the scripts exist as the README says."""
import re

import tomllib
import yaml
from conftest import ROOT


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_norm(r) for r in project["dependencies"]} | {_norm(r) for r in project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    got = {_norm(r) for r in pip if not r.startswith("-e")}
    assert got == wanted, f"only in environment.yml: {got - wanted}; only in pyproject.toml: {wanted - got}"
    assert "-e ." in pip, "environment.yml must install the kit itself"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "./run_tests.sh" in readme and "./run_all.sh" in readme
    assert "./run_tests.sh" in (ROOT / ".ci" / "run").read_text()
