"""Reproduction report: runs are matched with the paper rows of their params file; label-cloud weights."""
import json

import numpy as np
from conftest import ROOT

from mlc.evaluation.report import PAPER_NUMBERS, finished_runs, paper_comparison, released_models, rows_without_params
from mlc.methods.salgl.figures import scene_label_weights


def test_paper_numbers_file_is_complete_and_tagged():
    import pandas as pd
    papers = pd.read_csv(PAPER_NUMBERS, keep_default_na=False)
    assert {"Q2L", "SALGL", "SGRE", "MKT", "QKS"} <= set(papers["paper"])
    given = papers[papers["value"] != ""]
    assert set(given["source_tag"]) <= {"P", "S", "R"} and (given["source"] != "").all()
    for f in [*papers["params_file"], *papers["released_params"]]:
        assert not f or (ROOT / f).is_file(), f
    # every row has a params file (the report would name those without)
    assert rows_without_params().empty


def test_every_released_model_has_a_params_file_naming_its_file_and_number():
    table = released_models()
    assert len(table) == 17
    assert (table.groupby("method").size().to_dict()
            == {"q2l": 6, "salgl": 4, "sgre": 3, "mkt": 2, "qks": 2})
    assert table["checkpoint"].str.startswith("released/").all() and (table["download"] != "").all()
    q2l = table[table["method"] == "q2l"].set_index("released model")["published"]
    assert q2l.to_dict() == {"Q2L-R101-448": 84.9, "Q2L-R101-576": 86.5, "Q2L-TResL-448": 87.3,
                             "Q2L-TResL_22k-448": 89.2, "Q2L-SwinL-384": 90.5, "Q2L-CvT_w24-384": 91.3}


def test_runs_are_matched_to_paper_rows_by_params_file(tmp_path):
    run = tmp_path / "q2l_coco_r101_448"
    (run / "q2l").mkdir(parents=True)
    (run / "params.yaml").write_text(f"# resolved from {ROOT / 'params/q2l/coco_r101_448.yaml'}\n"
                                     "name: q2l_coco_r101_448\nmethods:\n  q2l: {}\n")
    (run / "q2l" / "metrics_test.json").write_text(json.dumps({"mAP": 0.8512, "CF1": 0.79, "OF1": 0.81}))
    assert len(finished_runs(tmp_path)) == 0               # metrics without a finished training: not a result
    (run / "q2l" / "result.json").write_text("{}")
    runs = finished_runs(tmp_path)
    assert runs["params"].tolist() == ["params/q2l/coco_r101_448.yaml"]
    table = paper_comparison(runs)
    row = table[(table["params_file"] == "params/q2l/coco_r101_448.yaml") & (table["metric"] == "mAP")]
    assert row["kit (trained)"].tolist() == ["85.1"] and row["paper value"].tolist() == ["84.9"]
    assert row["kit (released weights)"].tolist() == ["not run"]
    assert set(table[table["params_file"] == "params/q2l/coco_r101_576.yaml"]["kit (trained)"]) == {"not run"}
    # the released file, evaluated by the kit: its own column, never mixed with the trained run
    rel = tmp_path / "released_q2l_coco_r101_448"
    (rel / "q2l").mkdir(parents=True)
    (rel / "params.yaml").write_text(f"# resolved from {ROOT / 'params/released/q2l_coco_r101_448.yaml'}\n"
                                     "name: released_q2l_coco_r101_448\nmethods:\n  q2l: {}\n")
    (rel / "q2l" / "metrics_test.json").write_text(json.dumps({"mAP": 0.849, "CF1": 0.793, "OF1": 0.815,
                                                               "weights": {"kind": "released"}}))
    table = paper_comparison(finished_runs(tmp_path))
    row = table[(table["params_file"] == "params/q2l/coco_r101_448.yaml") & (table["metric"] == "mAP")]
    assert row[["kit (trained)", "kit (released weights)"]].values.tolist() == [["85.1", "84.9"]]


def test_scene_cloud_weights_are_each_labels_share_per_scene():
    m = np.zeros((2, 3, 3))
    m[0, 0, 0], m[1, 0, 0] = 3, 1          # label 0: 3/4 in scene 0
    m[1, 2, 2] = 5                         # label 2: only scene 1; label 1: never seen
    assert scene_label_weights(m).tolist() == [[150, 0, 0], [50, 0, 200]]
