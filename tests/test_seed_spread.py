"""Claims over seeds: the paired-difference rule, the keys that decide whether a results file applies, and the
columns the notebooks show."""
import json

import pandas as pd
import pytest
from conftest import ROOT

from mlc.config.params import load_params
from mlc.evaluation.seed_spread import load_spread, recipe_key, spread_sentence, summarize, with_spread, world_key


def _runs(diffs):
    return {str(seed): {"q2l": {"metric": "test mAP", "value": 50 + d, "compared with": {"lin": 50.0},
                                "difference": d}} for seed, d in enumerate(diffs)}


@pytest.mark.parametrize("diffs,holds", [([3.0, 3.5, 2.5], True),      # mean 3.0, SE 0.29: holds
                                         ([3.0, -1.0, 1.0], False),    # mean 1.0, SE 1.15: inside the spread
                                         ([-2.0, -2.5, -1.5], False)])
def test_a_claim_holds_over_seeds_only_beyond_twice_its_standard_error(diffs, holds):
    s = summarize(_runs(diffs))["q2l"]
    assert s["n"] == 3 and s["holds"] is holds
    assert s["mean_difference"] == pytest.approx(sum(diffs) / 3)
    assert s["standard_error"] == pytest.approx(pd.Series(diffs).std() / 3 ** 0.5)


def test_one_seed_cannot_judge():
    assert summarize(_runs([4.0]))["q2l"]["holds"] is None


def test_the_recipe_key_ignores_seed_name_and_speed_but_not_a_result_setting(tmp_path):
    pf = ROOT / "params" / "toy_ci.yaml"
    base = load_params(pf, output_root=str(tmp_path))
    same = [["seed=3", "name=other"], ["methods.q2l.train.channels_last=false", "data.num_workers=2"]]
    for sets in same:
        assert recipe_key(load_params(pf, set_args=sets, output_root=str(tmp_path))) == recipe_key(base), sets
    assert recipe_key(load_params(pf, set_args=["methods.q2l.train.lr=0.5"], output_root=str(tmp_path))) != \
        recipe_key(base)
    assert world_key(load_params(pf, set_args=["data.toy.seed=5"], output_root=str(tmp_path))) != world_key(base)


def test_a_results_file_for_another_world_or_recipe_is_not_shown(tmp_path):
    params = load_params(ROOT / "params" / "toy_ci.yaml", output_root=str(tmp_path))
    path = tmp_path / "spread.json"
    record = {"world_key": world_key(params), "recipe_key": recipe_key(params), "seeds": [0, 1, 2],
              "made": "2026-12-02", "summary": summarize(_runs([3.0, 3.5, 2.5]))}
    path.write_text(json.dumps(record))
    spread, note = load_spread(params, path)
    assert spread is not None and note.startswith("over seeds 0, 1, 2")
    table = with_spread(pd.DataFrame({"holds here": ["yes"]}, index=pd.Index(["q2l"], name="method")), params, path)
    assert table.loc["q2l", "difference over seeds"] == "+3.0 ± 0.3 (n=3)"
    assert table.loc["q2l", "holds over seeds"] == "yes"
    for key, what in (("world_key", "another toy world"), ("recipe_key", "another recipe")):
        path.write_text(json.dumps({**record, key: "0" * 12}))
        spread, note = load_spread(params, path)
        assert spread is None and what in note
        assert "holds over seeds" not in with_spread(pd.DataFrame(index=["q2l"]), params, path)
    assert "no seed-spread results" in load_spread(params, tmp_path / "missing.json")[1]


def test_the_sentence_of_a_method_notebook(tmp_path, monkeypatch):
    import mlc.evaluation.seed_spread as ss
    params = load_params(ROOT / "params" / "toy_ci.yaml", output_root=str(tmp_path))
    path = tmp_path / "spread.json"
    path.write_text(json.dumps({"world_key": world_key(params), "recipe_key": recipe_key(params), "seeds": [0, 1, 2],
                                "made": "2026-12-02", "summary": summarize(_runs([3.0, -1.0, 1.0]))}))
    monkeypatch.setattr(ss, "claim_difference", lambda p, m: {"difference": 2.5})
    text = spread_sentence(params, "q2l", path)
    assert "this run: +2.5" in text and "mean +1.0" in text and "does not hold beyond the seed-to-seed spread" in text


def test_mechanism_gains_are_judged_per_group_over_seeds(tmp_path):
    from mlc.evaluation.seed_spread import mechanism_spread, summarize_groups
    per_seed = {"0": {"salgl": {"small": 3.0, "large": 0.5, "context-decided": float("nan")}},
                "1": {"salgl": {"small": 2.0, "large": -0.5}},
                "2": {"salgl": {"small": 2.5, "large": 0.2}}}
    out = summarize_groups(per_seed)["salgl"]
    assert out["small"]["holds"] is True and out["small"]["mean_gain"] == pytest.approx(2.5)
    assert out["large"]["holds"] is False and out["large"]["n"] == 3
    assert "context-decided" not in out                  # a NaN gain (no positive in the group) is left out
    params = load_params(ROOT / "params" / "toy_ci.yaml")
    f = tmp_path / "spread.json"
    f.write_text(json.dumps({"world_key": world_key(params), "recipe_key": recipe_key(params), "seeds": [0, 1, 2],
                             "summary": {}, "mechanisms": summarize_groups(per_seed)}))
    table, note = mechanism_spread(params, "salgl", f)
    assert table.loc["small", "holds"] == "yes" and table.loc["large", "holds"] == "no" and "seeds 0, 1, 2" in note
    assert mechanism_spread(params, "q2l", f)[0] is None


def test_the_committed_results_file_is_for_the_toy_world_and_recipes_of_params_toy_yaml(tmp_path):
    """A change to the toy world or to a toy recipe runs the seed spread again (``python benchmarks/seed_spread.py``):
    else every notebook says that the file was made for another world or recipe instead of showing the claims
    over seeds, and docs/toy-claims.md and the README quote numbers no run of the kit reproduces."""
    params = load_params(ROOT / "params" / "toy.yaml", output_root=str(tmp_path))
    spread, note = load_spread(params, ROOT / "benchmarks" / "results_seed_spread.json")
    assert spread is not None, note
    assert set(spread["summary"]) == {"q2l", "salgl", "sgre", "mkt", "qks"} and spread["seeds"] == [0, 1, 2]
