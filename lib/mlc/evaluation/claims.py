"""Each paper's key claim against its baseline, measured on a run: the table each training notebook ends with
and the evaluation notebook collects.  Each method's folder registers its claim (``methods/<name>/claim.py``,
``@register_claim``) with the helpers below; this module knows no method.

Closed-set numbers are test mAP (the run's AP definition), open-vocabulary ones ZSL mAP (faithful protocol).
"""
from __future__ import annotations

import json

import pandas as pd

from mlc.config.params import RunParams
from mlc.core.io import metric_value
from mlc.core.registry import CLAIMS
from mlc.engine import stage
from mlc.runs.train import train_method


def test_map(params: RunParams, name: str) -> float | None:
    """Test mAP (in %) of a finished run, or None."""
    result = params.run_dir / name / stage.RESULT
    if not stage.is_finished(params.run_dir / name):
        return None
    return 100 * metric_value(json.loads(result.read_text())["test"]["mAP"])


def zsl_map(params: RunParams, name: str) -> float | None:
    """ZSL mAP (in %, faithful protocol) of an open-vocabulary run, or None."""
    f = params.run_dir / name / "metrics_zsl.json"
    return 100 * metric_value(json.loads(f.read_text())["faithful"]["ZSL"]["mAP"]) if f.is_file() else None


def clip_zero_shot(params: RunParams) -> float | None:
    """The run's CLIP zero-shot ZSL mAP (in %, ``baselines_zsl.json``), or None."""
    f = params.run_dir / "baselines_zsl.json"
    if not f.is_file():
        return None
    b = json.loads(f.read_text()).get("CLIP zero-shot")
    return 100 * metric_value(b["faithful"]["ZSL"]["mAP"]) if b else None


def baselines_of(params: RunParams, name: str) -> list[str]:
    """The runs the params mark as ``name``'s baselines (``baseline_for: name``)."""
    return [m for m, mp in params.methods.items() if mp.baseline_for == name]


def methods_of(params: RunParams, model_name: str) -> list[str]:
    """The runs of model ``model_name`` that are no baseline."""
    return [m for m, mp in params.methods.items() if mp.model_name == model_name and mp.baseline_for is None]


def measure(params: RunParams, method: str) -> dict:
    """The claim of ``method``'s paper on this run: ``{"claim", "metric", "values": {entry: value},
    "holds": bool | None, "sentence"}``; ``values`` lists the method first, then what the paper compares it
    with (None where a run is missing).  Each method's folder registers how its claim is measured."""
    model_name = params.methods[method].model_name
    claim = CLAIMS.find(model_name)
    if claim is None:
        raise KeyError(f"{method!r} ({model_name}) has no paper claim; claims exist for {', '.join(CLAIMS.names())}")
    metric, values = claim.measure(params, method)
    if claim.compare is not None:
        mine, others = claim.compare(values)
    else:
        mine, others = list(values.values())[0], [v for v in list(values.values())[1:] if v is not None]
    holds = None if mine is None or not others else mine > max(others)
    if holds is None:
        sentence = f"{claim.text}: not measured (a run is missing)"
    else:
        best_other = max(others)
        sentence = (f"{claim.text}: {'holds' if holds else 'does not hold'} on the toy world "
                    f"({mine:.1f} against {best_other:.1f} {metric}, {mine - best_other:+.1f})")
    return {"method": method, "claim": claim.text, "metric": metric, "values": values, "holds": holds,
            "sentence": sentence}


def claim_table(params: RunParams, method: str) -> tuple[pd.DataFrame, str]:
    """(one column of numbers, the entries as rows; the sentence saying what they show) for a notebook."""
    m = measure(params, method)
    table = pd.DataFrame({m["metric"]: m["values"]}).round(1)
    return table, m["sentence"]


def all_claims(params: RunParams) -> pd.DataFrame:
    """One row per method of the run that has a paper claim: the claim, the method's number, its comparison's,
    and whether the claim holds here."""
    rows = []
    claims = {mp.model_name: CLAIMS.find(mp.model_name) for mp in params.methods.values()}
    names = [m for m, mp in params.methods.items() if claims[mp.model_name] is not None and mp.baseline_for is None
             and (claims[mp.model_name].shown is None or claims[mp.model_name].shown(mp))]
    for name in sorted(names, key=lambda n: claims[params.methods[n].model_name].order):
        m = measure(params, name)
        vals = list(m["values"].items())
        rows.append({"method": name, "paper's claim": m["claim"], "metric": m["metric"],
                     "method value": None if vals[0][1] is None else round(vals[0][1], 1),
                     "compared with": "; ".join(f"{k} {v:.1f}" for k, v in vals[1:] if v is not None),
                     "holds here": {True: "yes", False: "no", None: "not measured"}[m["holds"]]})
    return pd.DataFrame(rows)


def train_baselines(params: RunParams, method: str, progress: bool = True) -> list[str]:
    """Train the runs the params mark as ``method``'s baselines (``baseline_for: method``); their names."""
    names = baselines_of(params, method)
    for name in names:
        result = train_method(params, name, progress=progress)
        print(f"{name}: test mAP {100 * result.test['mAP']:.2f}")
    return names
