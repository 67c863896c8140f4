"""Each paper's claim, measured from a run's files: the table the training notebooks end with."""
import json

from conftest import ROOT

from mlc.config.params import load_params
from mlc.evaluation import claims


def _finished(run, name, mAP):
    (run / name).mkdir(parents=True, exist_ok=True)
    (run / name / "result.json").write_text(json.dumps({"test": {"mAP": mAP}}))


def _zsl(run, name, mAP):
    (run / name).mkdir(parents=True, exist_ok=True)
    (run / name / "metrics_zsl.json").write_text(json.dumps({"faithful": {"ZSL": {"mAP": mAP}}}))


def test_claims_compare_each_method_with_its_baseline_runs(tmp_path):
    params = load_params(ROOT / "params" / "toy.yaml", output_root=str(tmp_path))
    run = params.run_dir
    _finished(run, "q2l", 0.80)
    _finished(run, "q2l_linear", 0.74)
    _finished(run, "salgl", 0.70)
    _finished(run, "salgl_one_scene", 0.72)
    table, sentence = claims.claim_table(params, "q2l")
    assert table["test mAP"].to_dict() == {"q2l": 80.0, "backbone + linear head [q2l_linear]": 74.0}
    assert sentence.endswith("holds on the toy world (80.0 against 74.0 test mAP, +6.0)")
    assert "does not hold" in claims.claim_table(params, "salgl")[1]
    # open vocabulary: MKT's best stage and QKS against CLIP zero-shot (and QKS against MKT)
    for name, v in (("mkt", 0.44), ("mkt_prompt", 0.46), ("qks", 0.50)):
        _zsl(run, name, v)
    (run / "baselines_zsl.json").write_text(json.dumps({"CLIP zero-shot": {"faithful": {"ZSL": {"mAP": 0.48}}}}))
    m = claims.measure(params, "mkt")
    assert m["holds"] is False and "46.0 against 48.0" in m["sentence"]
    q = claims.measure(params, "qks")
    assert q["values"] == {"qks": 50.0, "MKT [mkt]": 44.0, "MKT [mkt_prompt]": 46.0, "CLIP zero-shot": 48.0}
    assert q["holds"] is True
    table = claims.all_claims(params)
    assert table["method"].tolist() == ["q2l", "salgl", "sgre", "mkt", "qks"]
    assert table.set_index("method")["holds here"].to_dict() == {
        "q2l": "yes", "salgl": "no", "sgre": "not measured", "mkt": "no", "qks": "yes"}


def test_a_baseline_for_a_method_the_params_lack_is_an_error(tmp_path):
    import pytest

    from mlc.config.params import ParamsError
    f = tmp_path / "p.yaml"
    f.write_text(f"extends: {ROOT / 'params/toy_ci.yaml'}\nmethods:\n  q2l_linear: {{baseline_for: q2l_typo}}\n")
    with pytest.raises(ParamsError, match="methods.q2l_linear.baseline_for: 'q2l_typo' is not a method"):
        load_params(f)
