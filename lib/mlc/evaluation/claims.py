"""Each paper's key claim against its baseline, measured on a run: the table each training notebook ends with
and the evaluation notebook collects.

| method | the paper's claim | measured with |
|---|---|---|
| Q2L | beats its backbone with a linear head | the ``baseline_for: q2l`` run (model ``linear``) |
| SALGL | scene-aware graphs beat one global graph | the ``baseline_for: salgl`` run (``num_scenes: 1``) |
| SGRE | its fused prediction beats either branch | the trained model's two outputs, scored alone |
| MKT | beats CLIP zero-shot on unseen labels | ``metrics_zsl.json`` against ``baselines_zsl.json`` |
| QKS | beats CLIP zero-shot and MKT on unseen labels | the same |

Closed-set numbers are test mAP (the run's AP definition), open-vocabulary ones ZSL mAP (faithful protocol).
"""
from __future__ import annotations

import json

import pandas as pd

from mlc.config.params import RunParams
from mlc.engine import stage
from mlc.evaluation.evaluate import output_maps
from mlc.runs.train import train_method

CLAIMS = {"q2l": "Q2L beats its backbone with a linear head",
          "salgl": "scene-aware label graphs beat one global graph",
          "sgre": "SGRE's prediction (pixel level, fed by the object-level label features) beats the object-level "
                  "branch alone",
          "mkt": "MKT beats CLIP zero-shot on the unseen labels",
          "qks": "QKS beats CLIP zero-shot and MKT on the unseen labels"}


def _test_map(params: RunParams, name: str) -> float | None:
    result = params.run_dir / name / stage.RESULT
    if not stage.is_finished(params.run_dir / name):
        return None
    return 100 * json.loads(result.read_text())["test"]["mAP"]


def _zsl_map(params: RunParams, name: str) -> float | None:
    f = params.run_dir / name / "metrics_zsl.json"
    return 100 * json.loads(f.read_text())["faithful"]["ZSL"]["mAP"] if f.is_file() else None


def _clip_zero_shot(params: RunParams) -> float | None:
    f = params.run_dir / "baselines_zsl.json"
    if not f.is_file():
        return None
    b = json.loads(f.read_text()).get("CLIP zero-shot")
    return 100 * b["faithful"]["ZSL"]["mAP"] if b else None


def _baselines_of(params: RunParams, name: str) -> list[str]:
    return [m for m, mp in params.methods.items() if mp.baseline_for == name]


def _methods_of(params: RunParams, model_name: str) -> list[str]:
    return [m for m, mp in params.methods.items() if mp.model_name == model_name and mp.baseline_for is None]


def measure(params: RunParams, method: str) -> dict:
    """The claim of ``method``'s paper on this run: ``{"claim", "metric", "values": {entry: value},
    "holds": bool | None, "sentence"}``; ``values`` lists the method first, then what the paper compares it
    with (None where a run is missing)."""
    model_name = params.methods[method].model_name
    values: dict[str, float | None] = {}
    if model_name in ("q2l", "salgl"):
        metric = "test mAP"
        values[method] = _test_map(params, method)
        for b in _baselines_of(params, method):
            label = "backbone + linear head" if params.methods[b].model_name == "linear" else \
                "one scene (one global graph)" if getattr(params.methods[b].model, "num_scenes", 0) == 1 else b
            values[f"{label} [{b}]"] = _test_map(params, b)
    elif model_name == "sgre":
        metric = "test mAP"
        if stage.is_finished(params.run_dir / method):
            maps = output_maps(params, method, {"prediction (pixel level)": "logits",
                                                "object-level branch alone": "object_logits"})
            values.update({k: 100 * v for k, v in maps.items()})
        else:
            values.update({"prediction (pixel level)": None, "object-level branch alone": None})
    elif model_name in ("mkt", "qks"):
        metric = "ZSL mAP"
        values[method] = _zsl_map(params, method)
        if model_name == "mkt":                      # the other stage beside it
            for m in _methods_of(params, "mkt"):
                if m != method:
                    values[m] = _zsl_map(params, m)
        else:
            for m in _methods_of(params, "mkt"):
                values[f"MKT [{m}]"] = _zsl_map(params, m)
        values["CLIP zero-shot"] = _clip_zero_shot(params)
    else:
        raise KeyError(f"{method!r} ({model_name}) has no paper claim; claims exist for {', '.join(CLAIMS)}")
    mine, others = list(values.values())[0], [v for v in list(values.values())[1:] if v is not None]
    if model_name == "mkt":                          # MKT: its best stage against CLIP
        mine = max([v for k, v in values.items() if k != "CLIP zero-shot" and v is not None], default=None)
        others = [values["CLIP zero-shot"]] if values["CLIP zero-shot"] is not None else []
    holds = None if mine is None or not others else mine > max(others)
    if holds is None:
        sentence = f"{CLAIMS[model_name]}: not measured (a run is missing)"
    else:
        best_other = max(others)
        sentence = (f"{CLAIMS[model_name]}: {'holds' if holds else 'does not hold'} on the toy world "
                    f"({mine:.1f} against {best_other:.1f} {metric}, {mine - best_other:+.1f})")
    return {"method": method, "claim": CLAIMS[model_name], "metric": metric, "values": values, "holds": holds,
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
    order = ["q2l", "salgl", "sgre", "mkt", "qks"]
    names = [m for m, mp in params.methods.items() if mp.model_name in CLAIMS and mp.baseline_for is None
             and not (mp.model_name == "mkt" and getattr(mp.model, "stage", "image") == "prompt")]
    for name in sorted(names, key=lambda n: order.index(params.methods[n].model_name)):
        m = measure(params, name)
        vals = list(m["values"].items())
        rows.append({"method": name, "paper's claim": m["claim"], "metric": m["metric"],
                     "method value": None if vals[0][1] is None else round(vals[0][1], 1),
                     "compared with": "; ".join(f"{k} {v:.1f}" for k, v in vals[1:] if v is not None),
                     "holds here": {True: "yes", False: "no", None: "not measured"}[m["holds"]]})
    return pd.DataFrame(rows)


def train_baselines(params: RunParams, method: str, progress: bool = True) -> list[str]:
    """Train the runs the params mark as ``method``'s baselines (``baseline_for: method``); their names."""
    names = _baselines_of(params, method)
    for name in names:
        result = train_method(params, name, progress=progress)
        print(f"{name}: test mAP {100 * result.test['mAP']:.2f}")
    return names
