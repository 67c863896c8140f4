"""Every notebook, executed by papermill through the pipeline of run_all.sh, on the smallest toy params."""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from conftest import ROOT, paper_methods

from mlc.config.params import load_params


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One run of every notebook through the pipeline of run_all.sh (the tests below read its outputs)."""
    tmp_path = tmp_path_factory.mktemp("nb")
    p = tmp_path / "ci.yaml"
    p.write_text(f"extends: {ROOT / 'params/toy_ci.yaml'}\noutput_root: {tmp_path / 'outputs'}\n")
    run = subprocess.run([sys.executable, "-m", "mlc.pipeline", str(p)], cwd=ROOT, capture_output=True, text=True,
                         timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "[q2l] epoch 2/2" in run.stdout          # the notebooks' progress lines stream to the terminal
    return tmp_path / "outputs" / "toy_ci"


def _figures(run_dir, *names):
    for fig in names:
        assert (run_dir / "figures" / f"{fig}.png").stat().st_size > 0, fig
        assert (run_dir / "figures" / f"{fig}.pdf").read_bytes()[:4] == b"%PDF", fig


@pytest.mark.slow
def test_every_notebook_ran_without_error_and_with_few_progress_outputs(run_dir):
    sources = sorted(n.name for n in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    executed = sorted(n.name for n in (run_dir / "notebooks").glob("*.ipynb"))
    assert executed == sources
    for name in executed:
        nb = nbformat.read(run_dir / "notebooks" / name, as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.output_type == "error"], name
        bars = [o for o in outputs if o.output_type == "stream" and "%|" in o.get("text", "")]
        assert not bars, f"{name}: {len(bars)} progress-bar outputs"
    html = sorted(p.name for p in (run_dir / "html").glob("*.html"))
    assert html == sorted([n.replace(".ipynb", ".html") for n in sources] + ["index.html"])
    assert (run_dir / "params.yaml").is_file() and (run_dir / "environment.json").is_file()


@pytest.mark.slow
def test_01_data_preparation(run_dir):
    _figures(run_dir, "data_samples", "data_cooccurrence_by_scene", "data_cooccurrence", "data_labels_per_image")


@pytest.mark.slow
def test_02_toy_clip(run_dir):
    _figures(run_dir, "toy_imagenet_samples", "clip_pretraining", "clip_zero_shot_per_class_ap")
    zero_shot = json.loads((run_dir / "clip_zero_shot.json").read_text())
    assert 0 <= zero_shot["unseen_mAP"] <= 1 and len(zero_shot["per_class_AP"]) == 30 + 54     # objects and tags


@pytest.mark.slow
def test_03_label_embeddings(run_dir):
    _figures(run_dir, "label_embeddings_clip_qks")
    manifest_dir = next((run_dir.parent / "datasets").glob("toy-*"))
    for enc in ("words", "clip_qks", "clip_mkt"):
        assert np.load(manifest_dir / "embeddings" / f"{enc}.npy").shape[0] == 30 + 54


@pytest.mark.slow
def test_10_to_12_closed_set_training(run_dir):
    _figures(run_dir, "q2l_learning_curves", "salgl_scene_contingency", "salgl_learned_cooccurrence",
             "salgl_true_cooccurrence", "sgre_loss_terms")
    scenes = json.loads((run_dir / "salgl" / "metrics_scenes.json").read_text())
    assert -1 <= scenes["ARI"] <= 1 and 0 <= scenes["NMI"] <= 1 and scenes["n_images"] == 48
    params = load_params(ROOT / "params" / "toy_ci.yaml")
    for method in [m for m in paper_methods(params) if params.methods[m].label_subset != "seen"]:   # closed-set
        for log in ("train.log", "history.csv", "history.jsonl"):
            assert (run_dir / method / log).stat().st_size > 0, (method, log)
        assert list((run_dir / method).glob("events.out.tfevents.*"))     # TensorBoard run <run>/<method>
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    runs = EventMultiplexer().AddRunsFromDirectory(str(run_dir)).Reload()
    assert "figures/learning_curves" in runs.GetAccumulator("q2l").Tags()["images"]   # the notebook's figure
    from mlc.evaluation.mechanisms import mechanism_table
    from mlc.runs.data import prepare_data
    run_params = load_params(run_dir.parent.parent / "ci.yaml")
    manifest = prepare_data(run_params, progress=False)
    for method in ("q2l", "salgl", "sgre"):                       # where each gain comes from, by group
        table = mechanism_table(run_params, method, manifest)
        assert "gain" in table.index and {"all", "small", "large", "context-decided"} <= set(table.columns), method


@pytest.mark.slow
def test_13_14_open_vocabulary_training(run_dir):
    for fig in ("mkt_loss_terms", "mkt_prompt_example_heatmaps", "qks_query_usage", "qks_example_heatmaps"):
        assert (run_dir / "figures" / f"{fig}.pdf").is_file(), fig
    params = load_params(ROOT / "params" / "toy_ci.yaml")
    for method in [m for m, mp in params.methods.items() if mp.label_subset == "seen"]:
        zsl = json.loads((run_dir / method / "metrics_zsl.json").read_text())
        assert zsl["n_seen"] == 22 + 54 and set(zsl["faithful"]) == {"SEEN", "ZSL", "GZSL"}
        assert 0 <= zsl["faithful"]["ZSL"]["mAP"] <= 1 and "F1@3" in zsl["corrected"]["GZSL"]
    # notebook 13's mechanism: MKT's streams alone and together, and CLIP zero-shot, on the ZSL protocol's images
    streams = json.loads((run_dir / "mkt" / "zero_shot_streams.json").read_text())
    assert list(streams) == ["both streams", "global stream only", "local stream only", "CLIP zero-shot"]
    zsl = json.loads((run_dir / "mkt" / "metrics_zsl.json").read_text())["corrected"]["ZSL"]
    assert abs(streams["both streams"]["all"]["mAP"] - 100 * zsl["mAP"]) < 1.0      # the same scores, bf16 aside
    baselines = json.loads((run_dir / "baselines_zsl.json").read_text())["CLIP zero-shot"]["corrected"]["ZSL"]
    assert abs(streams["CLIP zero-shot"]["all"]["mAP"] - 100 * baselines["mAP"]) < 1e-6
    assert sum(streams["CLIP zero-shot"][g]["positives"] for g in ("small", "medium", "large")) == \
        streams["CLIP zero-shot"]["all"]["positives"]


@pytest.mark.slow
def test_20_evaluate(run_dir):
    _figures(run_dir, "eval_q2l_pr_curves", "eval_sgre_per_class_ap")
    metrics = json.loads((run_dir / "q2l" / "metrics_test.json").read_text())
    assert 0 <= metrics["mAP"] <= 1 and len(metrics["per_class_AP"]) == 30
    for method in ("salgl", "sgre"):
        m = json.loads((run_dir / method / "metrics_test.json").read_text())
        assert 0 <= m["mAP"] <= 1 and len(m["per_class_AP"]) == 30


@pytest.mark.slow
def test_21_explore(run_dir):
    for fig in ("explore_q2l", "explore_qks_new_labels"):
        assert (run_dir / "figures" / f"{fig}.pdf").read_bytes()[:4] == b"%PDF", fig


@pytest.mark.slow
def test_30_attention_heatmaps(run_dir):
    for method in [m for m, mp in load_params(ROOT / "params" / "toy_ci.yaml").methods.items()
                   if mp.baseline_for is None]:
        pg = json.loads((run_dir / method / "metrics_pointing.json").read_text())
        assert pg["pairs"] > 0 and 0 <= pg["score"] <= 1 and 0 < pg["chance"] < 1
        assert (run_dir / "figures" / f"heatmaps_{method}.pdf").is_file()


@pytest.mark.slow
def test_31_32_clouds_and_cooccurrence(run_dir):
    for fig in ("salgl_scene_clouds", "true_scene_clouds", "label_frequency_cloud", "cooccurrence_dataset",
                "cooccurrence_salgl_scenes"):
        assert (run_dir / "figures" / f"{fig}.pdf").read_bytes()[:4] == b"%PDF", fig


def test_notebooks_are_committed_clean_with_parameters_cell():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), path
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path} has outputs"


@pytest.mark.slow
def test_failing_notebook_stops_the_run_and_names_it(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text(f"extends: {ROOT / 'params/toy_ci.yaml'}\nname: broken\noutput_root: {tmp_path / 'outputs'}\n"
                 f"data: {{dataset: manifest, manifest: {tmp_path / 'no_such_dataset'}}}\n")
    run = subprocess.run([sys.executable, "-m", "mlc.pipeline", str(p)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 1
    assert "FAILED: notebook notebooks/01_data_preparation.ipynb" in run.stderr
    executed = tmp_path / "outputs" / "broken" / "notebooks" / "01_data_preparation.ipynb"
    assert str(executed) in run.stderr and executed.is_file()
    assert not (tmp_path / "outputs" / "broken" / "notebooks" / "10_train_q2l.ipynb").exists()


def test_only_pattern_that_matches_nothing_is_an_error(tmp_path):
    run = subprocess.run([sys.executable, "-m", "mlc.pipeline", str(ROOT / "params/toy_ci.yaml"), "--only", "2O_"],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and "--only 2O_ matches no notebook" in run.stderr


def test_misspelt_params_key_fails_before_any_notebook(tmp_path):
    p = tmp_path / "typo.yaml"
    p.write_text(f"extends: {ROOT / 'params/toy_ci.yaml'}\noutput_rot: {tmp_path}\n")
    run = subprocess.run([sys.executable, "-m", "mlc.pipeline", str(p)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and "output_rot" in run.stderr and "did you mean 'output_root'" in run.stderr


def _tiny_notebook(path, code, needs=None):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('params_file = ""', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if needs is not None:
        nb.metadata["mlc"] = {"needs": needs}
    nbformat.write(nb, path)
    return path


def test_notebooks_run_side_by_side_once_what_they_need_is_done_each_on_its_share_of_the_cores(tmp_path):
    from mlc.core.cpu import usable_cores
    from mlc.notebook.pipeline import _run_graph, notebook_needs
    log = tmp_path / "log"
    stamp = ("import os, time, pathlib\n"
             "def stamp(what):\n"
             f"    with open({str(log)!r}, 'a') as f:\n"
             "        f.write(f'{what} {time.time()} {os.environ[\"OMP_NUM_THREADS\"]}\\n')\n")
    nbs = [_tiny_notebook(tmp_path / "01_first.ipynb", stamp + "stamp('01s'); time.sleep(1); stamp('01e')"),
           _tiny_notebook(tmp_path / "02_a.ipynb", stamp + "stamp('02s'); time.sleep(4); stamp('02e')", ["01"]),
           _tiny_notebook(tmp_path / "03_b.ipynb", stamp + "stamp('03s'); time.sleep(4); stamp('03e')", ["01"]),
           _tiny_notebook(tmp_path / "04_last.ipynb", stamp + "stamp('04s')")]
    needs = {nb: notebook_needs(nb, nbs) for nb in nbs}
    assert needs[nbs[1]] == [nbs[0]] and needs[nbs[3]] == nbs[:3]          # no metadata: every earlier one
    out = tmp_path / "out"
    out.mkdir()
    assert _run_graph(nbs, needs, 2, tmp_path, out, tmp_path / "p.yaml", 0.0) is None
    events = {w: (float(t), int(n)) for w, t, n in (line.split() for line in log.read_text().splitlines())}
    assert events["01e"][0] <= min(events["02s"][0], events["03s"][0])            # waited for 01
    assert events["02s"][0] < events["03e"][0] and events["03s"][0] < events["02e"][0]    # side by side
    assert events["04s"][0] >= max(events["02e"][0], events["03e"][0])
    # one share for all, alone or not: a training's last digits must not depend on what ran beside it
    assert {n for _, n in events.values()} == {max(1, usable_cores() // 2)}


def test_a_failing_notebook_stops_the_others_and_is_named(tmp_path):
    from mlc.notebook.pipeline import _run_graph, notebook_needs
    nbs = [_tiny_notebook(tmp_path / "01_slow.ipynb", "import time; time.sleep(120)", []),
           _tiny_notebook(tmp_path / "02_broken.ipynb", "raise ValueError('no such label: zebra')", []),
           _tiny_notebook(tmp_path / "03_after.ipynb", "pass")]
    out = tmp_path / "out"
    out.mkdir()
    t0 = __import__("time").time()
    failed = _run_graph(nbs, {nb: notebook_needs(nb, nbs) for nb in nbs}, 2, tmp_path, out, tmp_path / "p.yaml", t0)
    assert failed is not None and failed[0] == nbs[1] and failed[1] == out / "02_broken.ipynb"
    assert "ValueError: no such label: zebra" in failed[2]
    assert __import__("time").time() - t0 < 60                                  # the slow one was stopped
    assert not (out / "03_after.ipynb").exists()


def test_the_kits_notebooks_declare_what_they_need_and_up_to_five_run_together():
    from mlc.notebook.pipeline import notebook_needs, widest_level
    nbs = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    needs = {nb: [n.name[:2] for n in notebook_needs(nb, nbs)] for nb in nbs}
    by_number = {nb.name[:2]: v for nb, v in needs.items()}
    assert by_number["10"] == ["01"] and by_number["13"] == ["01", "02", "03"]      # Q2L needs no CLIP
    assert by_number["20"] == [nb.name[:2] for nb in nbs if nb.name < "20"]           # no metadata: all before
    assert widest_level({nb: notebook_needs(nb, nbs) for nb in nbs}) == 5              # 20, 21, 30, 31, 32
    chain = {Path(f"{i:02d}_x.ipynb"): [Path(f"{j:02d}_x.ipynb") for j in range(i)] for i in range(3)}
    assert widest_level(chain) == 1
