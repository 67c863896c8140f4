"""Evaluation of a finished method run on the test split."""
from __future__ import annotations

import json

from .engine import make_loader, pick_device, predict
from .io import atomic_write_text
from .metrics import evaluate_scores, label_frequency_baseline, mean_average_precision
from .params import RunParams
from .train import build_method, load_trained, method_data, method_params


def _finished_on_test(params: RunParams, name: str, device: str):
    """(method params, data, device, best model, test loader) of a finished run: what every test evaluation needs."""
    mp = method_params(params, name)
    data = method_data(params, name)
    dev = pick_device(device if device != "auto" else mp.train.device)
    model = load_trained(params, name, device=str(dev))
    loader = make_loader(data.datasets["test"], mp.train.eval_batch_size, shuffle=False,
                         num_workers=params.data.num_workers)
    return mp, data, dev, model, loader


def evaluate_method(params: RunParams, name: str, device: str = "auto", progress: bool = True) -> dict:
    """Recompute the test scores from the best checkpoint and every metric on them.

    Returns ``{"scores", "targets", "label_names", "report"}``; the report holds mAP under both AP
    definitions, the threshold metrics and top-k variants, and the label-frequency baseline.  It is
    also written to ``outputs/<run>/<method>/metrics_test.json``.
    """
    mp, data, dev, model, loader = _finished_on_test(params, name, device)
    method = build_method(mp, len(data.labels), model=model)
    pred = predict(model, method, loader, dev, mp.train.amp, desc=f"test {name}", progress=progress)
    ev = params.eval
    report = evaluate_scores(pred["scores"], pred["targets"], ev.ap_mode, ev.empty_class, ev.threshold, ev.top_k)
    other = "noninterp" if ev.ap_mode == "voc" else "voc"
    report[f"mAP_{other}"] = mean_average_precision(pred["scores"], pred["targets"], other, ev.empty_class)[0]
    report["baseline_label_frequency_mAP"] = label_frequency_baseline(
        data.datasets["train"].targets(), pred["targets"], ev.ap_mode, ev.empty_class)
    report["test_loss"] = pred["loss"]
    report["n_images"] = int(len(pred["targets"]))
    out = params.run_dir / name / "metrics_test.json"
    atomic_write_text(out, json.dumps({"method": name, **report, "label_names":
                                       [data.manifest.label_names[i] for i in data.labels]}, indent=1))
    return {"scores": pred["scores"], "targets": pred["targets"],
            "label_names": [data.manifest.label_names[i] for i in data.labels], "report": report}


def output_maps(params: RunParams, name: str, outputs: dict[str, str], device: str = "auto",
                progress: bool = False) -> dict[str, float]:
    """Test mAP of several logit outputs of one finished run, e.g. SGRE's two branches:
    ``{"pixel level": "logits", "object level": "object_logits"}`` -> {name: mAP}."""
    import torch

    from .method import Method
    mp, _, dev, model, loader = _finished_on_test(params, name, device)
    out = {}
    for label, key in outputs.items():
        scorer = Method(model, loss_fn=None, scores_fn=lambda o, key=key: torch.sigmoid(o[key].float()))
        pred = predict(model, scorer, loader, dev, mp.train.amp, desc=f"test {name} ({key})", progress=progress)
        out[label] = mean_average_precision(pred["scores"], pred["targets"], params.eval.ap_mode,
                                            params.eval.empty_class)[0]
    return out


def summary_table(reports: dict[str, dict]):
    """One row per method: mAP and the threshold metrics in %, as the papers print them."""
    import pandas as pd
    cols = ["mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"]
    rows = {}
    for name, r in reports.items():
        k = [c for c in r if c.startswith("top") and c.endswith("_CP")]
        top = k[0][:-3] if k else None
        row = {c: 100 * r[c] for c in cols}
        if top:
            row.update({f"{top} {c}": 100 * r[f"{top}_{c}"] for c in cols[1:]})
        row["baseline mAP"] = 100 * r["baseline_label_frequency_mAP"]
        rows[name] = row
    return pd.DataFrame(rows).T.round(1)
