"""A new method needs only its own folder, a params entry and a notebook (CONTRIBUTING, "Adding a method").

The sixth method lives in ``tests/plugins/mlc_dummy`` -- outside the library, so nothing in ``lib/`` can know
it -- and is found the way a method kept outside the kit is: ``MLC_PLUGINS=mlc_dummy`` with its folder on
``PYTHONPATH``.  It is trained with ``python -m mlc.train``, its notebook runs its claim cell, and
``python -m mlc.evaluate`` scores it, each in a process of its own as a user runs them.
"""
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from mlc.core import registry

PLUGINS = ROOT / "tests" / "plugins"
METHOD = """\
methods:
  dummy:
    label_subset: objects    # a closed-set method learns the toy world's objects, not its tags
    model: {name: maxpool_dummy, backbone: toy_cnn}
    input: {image_size: 64, normalize: imagenet}
    train: {epochs: 2, batch_size: 16, eval_batch_size: 48}
  dummy_mean:
    baseline_for: dummy
    label_subset: objects
    model: {name: linear, backbone: toy_cnn}
    input: {image_size: 64, normalize: imagenet}
    train: {epochs: 2, batch_size: 16, eval_batch_size: 48}
"""


def _params(tmp_path):
    p = tmp_path / "dummy.yaml"
    p.write_text(f"extends: {ROOT / 'params/toy_ci.yaml'}\nname: dummy_run\noutput_root: {tmp_path / 'out'}\n"
                 f"data:\n  root: {tmp_path / 'world'}\n  toy: {{n_train: 64, n_val: 16, n_test: 24}}\n{METHOD}")
    return p


def _env(with_plugin=True):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    env.pop(registry.PLUGINS_ENV, None)
    if with_plugin:
        env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env[registry.PLUGINS_ENV] = "mlc_dummy"
    return env


def _run(args, env, cwd=ROOT):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_a_sixth_method_from_its_own_folder_trains_claims_and_evaluates(tmp_path):
    pf = _params(tmp_path)
    # without its folder the kit does not know it, and says which names it knows
    unknown = _run(["-m", "mlc.train", str(pf), "--method", "dummy"], _env(with_plugin=False))
    assert unknown.returncode == 2 and "maxpool_dummy" in unknown.stderr and "known:" in unknown.stderr

    env = _env()
    trained = _run(["-m", "mlc.train", str(pf), "--method", "dummy"], env)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    assert trained.stdout.strip().splitlines()[-2].startswith("test mAP")
    assert trained.stdout.strip().splitlines()[-1] == f"run folder: {tmp_path / 'out' / 'dummy_run' / 'dummy'}"
    run_dir = tmp_path / "out" / "dummy_run"
    assert json.loads((run_dir / "dummy" / "result.json").read_text())["test"]["mAP"] > 0

    # its notebook: the finished run is reused, its baseline trained, and the claim cell measures the claim
    executed = tmp_path / "15_train_dummy.out.ipynb"
    code = ("import papermill as pm, sys; pm.execute_notebook(sys.argv[1], sys.argv[2], "
            "parameters={'params_file': sys.argv[3]}, kernel_name='python3', progress_bar=False)")
    nb = _run(["-c", code, str(PLUGINS / "mlc_dummy" / "15_train_dummy.ipynb"), str(executed), str(pf)], env)
    assert nb.returncode == 0, nb.stderr[-3000:]
    cells = json.loads(executed.read_text())["cells"]
    printed = "".join(o.get("text", "") if isinstance(o.get("text"), str) else "".join(o.get("text", []))
                      for c in cells if c["cell_type"] == "code" for o in c.get("outputs", []))
    assert "max-pooled label maps beat mean pooling: " in printed
    assert "holds on the toy world" in printed or "does not hold on the toy world" in printed, printed

    # the evaluation command scores it like any method (from another folder: nothing depends on the cwd)
    evaluated = _run(["-m", "mlc.evaluate", str(pf), "--method", "dummy"], env, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stdout[-2000:] + evaluated.stderr[-2000:]
    metrics = json.loads((run_dir / "dummy" / "metrics_test.json").read_text())
    assert 0 <= metrics["mAP"] <= 1 and len(metrics["per_class_AP"]) == 30


def test_a_plugin_module_that_cannot_be_imported_is_named(monkeypatch):
    monkeypatch.setenv(registry.PLUGINS_ENV, "no_such_plugin_module")
    with pytest.raises(ModuleNotFoundError, match="MLC_PLUGINS names 'no_such_plugin_module'"):
        registry.discover()


def test_an_unknown_name_suggests_the_closest_and_lists_the_known():
    with pytest.raises(KeyError, match=r"unknown model 'q2k'.*q2l.*known: .*salgl"):
        registry.model_entry("q2k")
    with pytest.raises(KeyError, match="registered twice"):
        registry.LOSSES.register("asl", lambda cfg: None)


def test_every_method_folder_registers_a_model_and_a_claim_and_nothing_else_does():
    """Each ``lib/mlc/methods/<name>/`` registers a model; every model with a paper registers its claim."""
    folders = sorted(p.name for p in (ROOT / "lib" / "mlc" / "methods").iterdir() if (p / "__init__.py").is_file())
    models = registry.list_models()
    for folder in folders:
        assert any(registry.model_entry(m).build.__module__.startswith(f"mlc.methods.{folder}.") for m in models), \
            folder
    assert set(registry.CLAIMS.names()) <= set(models)
    assert sorted(registry.CLAIMS.names(), key=lambda m: registry.CLAIMS.get(m).order) == \
        ["q2l", "salgl", "sgre", "mkt", "qks"]


def _plugin_package(root, name: str) -> None:
    """A plug-in package whose first module registers a prompt set and whose second fails until ``FIXED``."""
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import first, second\n")
    (pkg / "first.py").write_text(
        "from mlc.core.registry import PROMPTS\n"
        f"PROMPTS.register({name + '_prompts'!r}, lambda: ['a photo of a {{}}.'])\n")
    (pkg / "second.py").write_text(
        "import os\n"
        "if not os.environ.get('FIXED'):\n"
        "    raise RuntimeError('the real error of second.py')\n")


def test_a_failed_plugin_import_raises_its_own_error_again_and_loads_whole_once_fixed(tmp_path, monkeypatch):
    registry.discover()
    name = "mlc_halfway_plugin"
    _plugin_package(tmp_path, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(registry.PLUGINS_ENV, name)
    monkeypatch.delenv("FIXED", raising=False)
    monkeypatch.setattr(registry, "_imported", set(registry._imported))
    monkeypatch.setattr(registry.PROMPTS, "_entries", dict(registry.PROMPTS._entries))
    for _ in range(2):   # the retry meets the same error, not "registered twice"
        with pytest.raises(RuntimeError, match="the real error of second.py"):
            registry.discover()
        assert name + "_prompts" not in registry.PROMPTS._entries   # (names() would retry the import)
    monkeypatch.setenv("FIXED", "1")
    registry.discover()   # the whole package is imported again, its first module included
    assert registry.PROMPTS.get(name + "_prompts")() == ["a photo of a {}."]
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        monkeypatch.delitem(sys.modules, module)


def test_a_plugin_module_in_a_missing_package_is_named_with_the_hint(monkeypatch):
    monkeypatch.setenv(registry.PLUGINS_ENV, "no_such_plugin_package.model")
    hint = r"MLC_PLUGINS names 'no_such_plugin_package.model'.*'no_such_plugin_package' is not found"
    with pytest.raises(ModuleNotFoundError, match=hint):
        registry.discover()
