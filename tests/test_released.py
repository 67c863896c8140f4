"""Released checkpoints: files written in each official container from the oracle records (regenerated official
weights) load through ``mlc.load_model`` as a user's would and give the official outputs; ``python -m
mlc.evaluate`` evaluates them and the report tells them from trained runs."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

import mlc
from mlc.data.manifest import Label, write_manifest


def _manifest(root, n_seen=20, n_unseen=0, n_images=4, size=64):
    """A manifest in the kit's format: n_seen (+ n_unseen) labels, a few random images in each split."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    labels = [Label(i, f"l{i}", f"label {i}", seen=i < n_seen) for i in range(n_seen + n_unseen)]
    splits = {}
    for split in ("train", "test"):
        rows = []
        for i in range(n_images):
            name = f"{split}_{i}.jpg"
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / name)
            pos = sorted({int(i % n_seen), int((i * 7 + 3) % (n_seen + n_unseen)), n_seen + i % max(n_unseen, 1)
                          if n_unseen else int((i + 5) % n_seen)})
            rows.append({"image": name, "pos": pos})
        splits[split] = pd.DataFrame(rows)
    write_manifest(root / "manifest", name="fixture", labels=labels, splits=splits, image_root="../images")
    return root / "manifest"


def _params(tmp_path, manifest, method, model, input_=None, train=None, name="released_fixture", released=None,
            label_subset="all"):
    p = {"name": name, "output_root": str(tmp_path / "outputs"),
         "data": {"dataset": "manifest", "manifest": str(manifest)},
         "methods": {method: {"model": model, "input": {"image_size": 224, **(input_ or {})},
                              "train": {"device": "cpu", "eval_batch_size": 4, "amp": "none", "select_on": "test",
                                        **(train or {})},
                              "label_subset": label_subset}}}
    if released:
        p["released"] = released
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump(p, sort_keys=False))
    return f


def _q2l_model(c):
    return {"name": "q2l", "backbone": c["backbone"], "hidden_dim": c["hidden_dim"], "nheads": c["nheads"],
            "enc_layers": c["enc_layers"], "dec_layers": c["dec_layers"], "dim_feedforward": c["dim_feedforward"],
            "dropout": c["dropout"]}


def _q2l_release(oracles, folder):
    """Q2L's model-zoo container: checkpoint.pkl with a DDP state dict under 'state_dict' + config_new.json."""
    from regen import official_state_dict
    sd, rec = official_state_dict(oracles / "q2l-small")
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 12, "arch": "Q2L-R18-224", "best_mAP": 0.42,
                "state_dict": {f"module.{k}": v for k, v in sd.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}},
               folder / "checkpoint.pkl")
    config = {k: v for k, v in rec["config"].items() if k not in ("official_repo", "commit", "builder", "batch")}
    (folder / "config_new.json").write_text(json.dumps({**config, "dataname": "coco14", "output": "log"}))
    return rec


def test_q2l_checkpoint_pkl_with_config_new_json_gives_the_official_outputs(oracles, tmp_path):
    rec = _q2l_release(oracles, tmp_path / "Q2L-R18-224")
    params = _params(tmp_path, _manifest(tmp_path, 20), "q2l", _q2l_model(rec["config"]))
    loaded = mlc.load(params, checkpoint=tmp_path / "Q2L-R18-224" / "checkpoint.pkl")
    assert loaded.weights["kind"] == "released" and "['state_dict'], 'module.' prefixed" in loaded.weights["format"]
    assert not loaded.model.training
    with torch.no_grad():
        out = loaded.model(rec["input"])
    torch.testing.assert_close(out["logits"], rec["outputs"]["logits"], atol=1e-4, rtol=1e-4)


def test_q2l_config_new_json_that_disagrees_with_the_params_is_an_error_naming_both(oracles, tmp_path):
    rec = _q2l_release(oracles, tmp_path / "zoo")
    model = {**_q2l_model(rec["config"]), "dim_feedforward": 2048}
    params = _params(tmp_path, _manifest(tmp_path, 20), "q2l", model)
    with pytest.raises(ValueError, match=r"dim_feedforward is 1024 in config_new.json but model.dim_feedforward "
                                         r"is 2048 in .*released_fixture.yaml"):
        mlc.load_model(params, checkpoint=tmp_path / "zoo" / "checkpoint.pkl")


def test_q2l_an_explicit_checkpoint_brings_its_own_config_new_json(oracles, tmp_path):
    """``checkpoint=PATH`` checks the config_new.json beside PATH, not the one the params name for their own
    release (here: not there at all); the params' ``released.config`` is only the fallback."""
    rec = _q2l_release(oracles, tmp_path / "mine")
    released = {"method": "q2l", "checkpoint": str(tmp_path / "zoo" / "checkpoint.pkl"),
                "config": str(tmp_path / "zoo" / "config_new.json")}
    params = _params(tmp_path, _manifest(tmp_path, 20), "q2l", _q2l_model(rec["config"]), released=released)
    loaded = mlc.load(params, checkpoint=tmp_path / "mine" / "checkpoint.pkl")
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(rec["input"])["logits"], rec["outputs"]["logits"], atol=1e-4,
                                   rtol=1e-4)
    # the side file beside the given checkpoint is the one checked: a wrong one there is named
    config = json.loads((tmp_path / "mine" / "config_new.json").read_text())
    (tmp_path / "mine" / "config_new.json").write_text(json.dumps({**config, "hidden_dim": 4096}))
    with pytest.raises(ValueError, match=r"mine/config_new.json: the released model's architecture differs"):
        mlc.load_model(params, checkpoint=tmp_path / "mine" / "checkpoint.pkl")
    # without a side file of its own, the params' released.config is checked
    (tmp_path / "mine" / "config_new.json").unlink()
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "config_new.json").write_text(json.dumps({**config, "nheads": 16}))
    with pytest.raises(ValueError, match=r"zoo/config_new.json: the released model's architecture differs"):
        mlc.load_model(params, checkpoint=tmp_path / "mine" / "checkpoint.pkl")


def test_a_checkpoint_for_another_class_count_is_named(oracles, tmp_path):
    rec = _q2l_release(oracles, tmp_path / "zoo")
    (tmp_path / "zoo" / "config_new.json").unlink()
    params = _params(tmp_path, _manifest(tmp_path, 21), "q2l", _q2l_model(rec["config"]))
    with pytest.raises(ValueError, match=r"checkpoint.pkl: official q2l checkpoint: 'query_embed.weight' has shape "
                                         r"\(20, 512\), the model's is \(21, 512\) \(the params give 21 labels"):
        mlc.load_model(params, checkpoint=tmp_path / "zoo" / "checkpoint.pkl")


def test_a_checkpoint_of_another_method_is_refused(oracles, tmp_path):
    from regen import official_state_dict
    sd, rec = official_state_dict(oracles / "sgre-small")
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "best_ema_model.pth")
    q2l = _q2l_release(oracles, tmp_path / "zoo")
    params = _params(tmp_path, _manifest(tmp_path, 20), "q2l", _q2l_model(q2l["config"]))
    with pytest.raises(ValueError, match="not a kit checkpoint of this model and not an official q2l checkpoint"):
        mlc.load_model(params, checkpoint=tmp_path / "best_ema_model.pth")


@pytest.mark.parametrize("record", ["salgl-small", "salgl-small-soft"])
def test_salgl_ema_best_model_pth_gives_the_official_outputs(oracles, tmp_path, record):
    from regen import official_state_dict
    sd, rec = official_state_dict(oracles / record)
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ema_best_model.pth")   # ModelEma wrapper
    np.save(tmp_path / "bert.npy", rec["extra"]["label_embeddings"].numpy())
    c = rec["config"]
    model = {"name": "salgl", "backbone": f"{c['backbone']}_bn", "num_scenes": c["num_scenes"],
             "num_steps": c["num_steps"], "soft": c["soft"], "outmess": c["outmess"], "normalize": c["normalize"],
             "ignore_self": c["ignore_self"], "pos": c["pos"], "heads": c["encoder"]["nhead"],
             "dim_feedforward": c["encoder"]["dim_feedforward"], "att_dim": c["att_dim"],
             "embed_dim": c["embed_dim"], "label_embeddings": str(tmp_path / "bert.npy")}
    params = _params(tmp_path, _manifest(tmp_path, 20), "salgl", model)
    loaded = mlc.load(params, checkpoint=tmp_path / "ema_best_model.pth")
    with torch.no_grad():
        out = loaded.model(rec["input"])
    for key in ("logits", "scene_probs", "att_weights", "comat"):
        torch.testing.assert_close(out[key], rec["outputs"][key], atol=1e-4, rtol=1e-4)


def test_salgl_release_holds_its_label_embeddings_whatever_their_width(oracles, tmp_path):
    """The released params say ``label_embeddings: checkpoint``: the table comes from the file, at the file's
    width (no BERT, no .npy, whatever ``embed_dim`` says), and the official outputs follow."""
    from regen import official_state_dict
    sd, rec = official_state_dict(oracles / "salgl-small")
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
               tmp_path / "ema_best_model.pth")
    c = rec["config"]
    model = {"name": "salgl", "backbone": f"{c['backbone']}_bn", "num_scenes": c["num_scenes"],
             "num_steps": c["num_steps"], "soft": c["soft"], "outmess": c["outmess"], "normalize": c["normalize"],
             "ignore_self": c["ignore_self"], "pos": c["pos"], "heads": c["encoder"]["nhead"],
             "dim_feedforward": c["encoder"]["dim_feedforward"], "att_dim": c["att_dim"],
             "label_embeddings": "checkpoint", "embed_dim": 300}     # a width the file does not have
    params = _params(tmp_path, _manifest(tmp_path, 20), "salgl", model,
                     released={"method": "salgl", "checkpoint": str(tmp_path / "ema_best_model.pth")})
    loaded = mlc.load(params)                                        # the params' own release
    assert torch.equal(loaded.model.label_embeddings, sd["embeddings"])
    with torch.no_grad():
        out = loaded.model(rec["input"])
    torch.testing.assert_close(out["logits"], rec["outputs"]["logits"], atol=1e-4, rtol=1e-4)
    # a file without a table is named, not loaded with zeros
    torch.save({k: v for k, v in sd.items() if k != "embeddings"}, tmp_path / "no_table.pth")
    with pytest.raises(ValueError, match="no_table.pth.*holds no label-embedding table"):
        mlc.load_model(params, checkpoint=tmp_path / "no_table.pth")


def test_sgre_best_ema_model_pth_gives_the_official_outputs(oracles, tmp_path):
    from regen import official_state_dict
    sd, rec = official_state_dict(oracles / "sgre-small")
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "best_ema_model.pth")
    np.save(tmp_path / "bert.npy", rec["extra"]["label_embeddings"].numpy())     # not in the checkpoint
    c = rec["config"]
    model = {"name": "sgre", "backbone": f"{c['arch']}_bn", "pos": c["pos"], "enc_layers": c["num_layers"],
             "heads": c["num_heads"], "dim_feedforward": c["encoder_dim_feedforward"], "att_dim": c["att_dim"],
             "tau": c["tau"], "embed_dim": c["embed_dim"], "label_embeddings": str(tmp_path / "bert.npy")}
    params = _params(tmp_path, _manifest(tmp_path, 20), "sgre", model)
    with torch.no_grad():
        out = mlc.load_model(params, checkpoint=tmp_path / "best_ema_model.pth")(rec["input"])
    torch.testing.assert_close(out["logits"], rec["outputs"]["logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["alpha"], rec["outputs"]["alpha"], atol=1e-5, rtol=1e-4)


def _clip(tmp_path, name, ctor):
    from test_open_vocab import register_oracle_clip
    register_oracle_clip(tmp_path, name, ctor)


def _qks_release(oracles, tmp_path):
    """QKS's best_model.pth (the whole model's state dict) and the kit model config of the record."""
    from regen import official_state_dict
    sd, rec = official_state_dict(oracles / "qks-small")
    torch.save(sd, tmp_path / "best_model.pth")
    c = rec["config"]
    _clip(tmp_path, "qks-released-clip", c["clip_ctor"])
    return rec, {"name": "qks", "clip_model": "qks-released-clip", "clip_pretrained": None,
                 "num_query_tokens": c["num_query_tokens"], "num_layers": c["num_hidden_layers"], "heads": 12,
                 "rm_cls": c["rmcls"]}


def test_qks_best_model_pth_gives_the_official_outputs(oracles, tmp_path):
    rec, model = _qks_release(oracles, tmp_path)
    params = _params(tmp_path, _manifest(tmp_path, 20, 10), "qks", model, {"normalize": "clip"},
                     label_subset="seen")
    m = mlc.load_model(params, checkpoint=tmp_path / "best_model.pth")
    m.set_label_embeddings(rec["extra"]["test_text_features"])         # the official 85-prompt averages
    with torch.no_grad():
        out = m(rec["input"])
    torch.testing.assert_close(out["logits"], rec["outputs"]["logits"], atol=1e-4, rtol=1e-4)
    assert torch.equal(out["indices"], rec["outputs"]["indices"])


def _mkt_stage1(oracles, tmp_path):
    from regen import official_state_dict
    sd, rec = official_state_dict(oracles / "mkt-small")
    torch.save(sd, tmp_path / "model_epoch_3.pth")                         # CLIPVIT state dict, bare
    _clip(tmp_path, "mkt-released-clip", rec["config"]["clip_ctor"])
    return sd, rec


def test_mkt_stage1_model_epoch_pth_gives_the_official_outputs(oracles, tmp_path):
    sd, rec = _mkt_stage1(oracles, tmp_path)
    model = {"name": "mkt", "clip_model": "mkt-released-clip", "clip_pretrained": None, "topk": rec["config"]["topk"]}
    params = _params(tmp_path, _manifest(tmp_path, 20, 10), "mkt", model, {"normalize": "clip"},
                     label_subset="seen")
    m = mlc.load_model(params, checkpoint=tmp_path / "model_epoch_3.pth")
    m.set_label_embeddings(rec["extra"]["label_embeddings"])
    with torch.no_grad():
        out = m(rec["input"])
    torch.testing.assert_close(out["logits"], rec["outputs"]["logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["dist_feat"], rec["outputs"]["dist_feat"], atol=1e-4, rtol=1e-4)


def test_mkt_stage2_file_loads_the_tuned_context_on_the_official_stage1_encoder(oracles, tmp_path):
    """Stage 2 ships the PromptLearner (DDP, the whole tuned token table); its model takes the stage-1 file
    as image_checkpoint, in the official layout."""
    sd, rec = _mkt_stage1(oracles, tmp_path)
    import open_clip
    clip_model = open_clip.create_model("mkt-released-clip")
    torch.save(clip_model.state_dict(), tmp_path / "clip.pt")           # the CLIP both stages start from
    model = {"name": "mkt", "clip_model": "mkt-released-clip", "clip_pretrained": str(tmp_path / "clip.pt"),
             "stage": "prompt", "image_checkpoint": str(tmp_path / "model_epoch_3.pth"), "topk": rec["config"]["topk"]}
    params = _params(tmp_path, _manifest(tmp_path, 20, 10), "mkt", model, {"normalize": "clip"},
                     label_subset="seen")
    table = clip_model.token_embedding.weight.detach().clone()
    tuned = table + torch.randn_like(table)                              # every row moved; only the template counts
    stage2 = {f"module.{k}": v for k, v in (("token_embedding.weight", tuned),
                                            ("positional_embedding", clip_model.positional_embedding.detach()),
                                            ("text_projection", clip_model.text_projection.detach()))}
    torch.save(stage2, tmp_path / "model_9.pth")
    m = mlc.load_model(params, checkpoint=tmp_path / "model_9.pth")
    torch.testing.assert_close(m.prompt.context, tuned[m.prompt.context_ids])
    torch.testing.assert_close(m.visual.conv1.weight, sd["conv1.weight"])
    torch.testing.assert_close(m.visual.proj, sd["projection_dist"])


def test_evaluate_command_on_a_released_file_and_the_report_tells_it_from_a_trained_run(oracles, tmp_path):
    from mlc.evaluation.report import finished_runs
    rec = _q2l_release(oracles, tmp_path / "released" / "Q2L-R18-224")
    released = {"method": "q2l", "checkpoint": str(tmp_path / "released" / "Q2L-R18-224" / "checkpoint.pkl"),
                "model_name": "Q2L-R18-224", "paper_metric": "mAP", "paper_value": 42.0}
    params = _params(tmp_path, _manifest(tmp_path, 20, n_images=6), "q2l", _q2l_model(rec["config"]),
                     released=released)
    done = subprocess.run([sys.executable, "-m", "mlc.evaluate", str(params)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "q2l: released weights" in done.stdout
    metrics = json.loads((tmp_path / "outputs" / "released_fixture" / "q2l" / "metrics_test.json").read_text())
    assert metrics["weights"]["kind"] == "released" and metrics["n_images"] == 6
    assert len(metrics["weights"]["sha256"]) == 64 and 0 <= metrics["mAP"] <= 1
    runs = finished_runs(tmp_path / "outputs")
    row = runs[runs["run"] == "released_fixture"].iloc[0]
    assert row["weights"] == "released weights, evaluated by the kit" and row["mAP"] == pytest.approx(
        100 * metrics["mAP"])
    # a checkpoint file is never evaluated into a method folder that trained: nothing is replaced
    from mlc.config.params import load_params
    from mlc.evaluation.evaluate import EvaluationConflictError, evaluate
    (tmp_path / "outputs" / "released_fixture" / "q2l" / "result.json").write_text("{}")
    with pytest.raises(EvaluationConflictError, match="holds a training of 'q2l'"):
        evaluate(load_params(params), progress=False)
    assert json.loads((tmp_path / "outputs" / "released_fixture" / "q2l" / "metrics_test.json").read_text()) == metrics


def test_missing_released_file_says_where_to_put_it(tmp_path):
    params = _params(tmp_path, _manifest(tmp_path, 20), "q2l", {"name": "q2l", "backbone": "resnet18",
                                                                 "hidden_dim": 512},
                     released={"method": "q2l", "checkpoint": "nowhere/checkpoint.pkl", "model_name": "Q2L-X",
                               "download": "Download Q2L-X from the model zoo"})
    with pytest.raises(FileNotFoundError, match=r"nowhere/checkpoint.pkl: the released Q2L-X weights are not there"
                                                r"[\s\S]*Download Q2L-X from the model zoo"):
        mlc.load_model(params)


@pytest.mark.slow
def test_evaluation_notebook_on_released_params_shows_the_released_weights_and_per_class_ap(oracles, tmp_path):
    import nbformat
    import papermill as pm
    from conftest import ROOT
    rec = _q2l_release(oracles, tmp_path / "released" / "Q2L-R18-224")
    released = {"method": "q2l", "checkpoint": str(tmp_path / "released" / "Q2L-R18-224" / "checkpoint.pkl"),
                "model_name": "Q2L-R18-224", "paper_value": 42.0}
    params = _params(tmp_path, _manifest(tmp_path, 20, n_images=6), "q2l", _q2l_model(rec["config"]),
                     released=released)
    out = tmp_path / "20_evaluate.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / "20_evaluate.ipynb"), str(out),
                        parameters={"params_file": str(params)}, cwd=str(ROOT), kernel_name="python3",
                        progress_bar=False)
    text = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                   for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code" for o in c.outputs)
    assert "q2l: released weights from" in text and "Q2L-CvT_w24-384" in text
    figures = tmp_path / "outputs" / "released_fixture" / "figures"
    assert (figures / "eval_q2l_per_class_ap.png").stat().st_size > 0
    # the exploration notebook on the same released weights: labels and maps of the test images
    pm.execute_notebook(str(ROOT / "notebooks" / "21_explore.ipynb"), str(tmp_path / "21.ipynb"),
                        parameters={"params_file": str(params)}, cwd=str(ROOT), kernel_name="python3",
                        progress_bar=False)
    assert (figures / "explore_q2l.png").stat().st_size > 0


def test_evaluating_a_released_open_vocabulary_file_writes_the_zsl_report(oracles, tmp_path):
    from mlc.config.params import load_params
    from mlc.evaluation.evaluate import evaluate
    _, model = _qks_release(oracles, tmp_path)
    params = _params(tmp_path, _manifest(tmp_path, 20, 10, n_images=6), "qks", model, {"normalize": "clip"},
                     label_subset="seen", released={"method": "qks", "checkpoint": str(tmp_path / "best_model.pth"),
                                                    "model_name": "qks-fixture", "paper_metric": "ZSL mAP"})
    reports = evaluate(load_params(params), progress=False)
    assert set(reports) == {"qks"}
    out = tmp_path / "outputs" / "released_fixture" / "qks"
    zsl = json.loads((out / "metrics_zsl.json").read_text())
    assert zsl["weights"]["kind"] == "released" and zsl["n_seen"] == 20 and len(zsl["labels"]) == 30
    assert 0 <= zsl["faithful"]["ZSL"]["mAP"] <= 1
    from mlc.evaluation.report import finished_runs
    row = finished_runs(tmp_path / "outputs").iloc[0]
    assert row["weights"] == "released weights, evaluated by the kit" and row["ZSL mAP"] == pytest.approx(
        100 * zsl["faithful"]["ZSL"]["mAP"])


def test_evaluate_command_on_a_trained_toy_run(tmp_path):
    """``python -m mlc.evaluate`` on the kit's own run: the run's best checkpoint, 'trained' in the file and the
    report; the same weights given as a file evaluate into another run name, as a 'kit checkpoint'."""
    from conftest import ROOT, toy_params_file, train_subprocess

    from mlc.evaluation.report import finished_runs
    params = toy_params_file(tmp_path, train="epochs: 1, batch_size: 16", name="toyeval")
    assert train_subprocess(params).returncode == 0
    done = subprocess.run([sys.executable, "-m", "mlc.evaluate", str(params), "--method", "q2l"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "q2l: trained weights" in done.stdout
    metrics = json.loads((tmp_path / "out" / "toyeval" / "q2l" / "metrics_test.json").read_text())
    assert metrics["weights"]["kind"] == "trained" and metrics["n_images"] == 24
    best = tmp_path / "out" / "toyeval" / "q2l" / "checkpoints" / "best.pt"
    again = subprocess.run([sys.executable, "-m", "mlc.evaluate", str(params), "--method", "q2l", "--checkpoint",
                            str(best), "--set", "name=toyeval_file"], capture_output=True, text=True, cwd=ROOT,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    other = json.loads((tmp_path / "out" / "toyeval_file" / "q2l" / "metrics_test.json").read_text())
    assert other["weights"]["kind"] == "kit checkpoint" and other["mAP"] == pytest.approx(metrics["mAP"], abs=1e-12)
    report = finished_runs(tmp_path / "out").set_index("run")
    assert report.loc["toyeval", "CPU threads"] == 2                 # what the run trained with (OMP_NUM_THREADS)
    runs = report["weights"].to_dict()
    assert runs == {"toyeval": "trained by the kit", "toyeval_file": "a kit checkpoint file, evaluated by the kit"}
