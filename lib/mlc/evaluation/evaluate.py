"""Evaluation on the test split: of a finished run, a kit checkpoint file, or the authors' released weights.

    python -m mlc.evaluate PARAMS_FILE [--method M] [--checkpoint PATH] [--set KEY=VALUE ...]

writes ``<run>/<method>/metrics_test.json`` (and ``metrics_zsl.json``, the SEEN / ZSL / GZSL report, for an
open-vocabulary method); each says in ``weights`` where the weights came from ("trained" by the kit, a "kit
checkpoint" file, or "released" official weights) with the file and its SHA-256.  A checkpoint file is
evaluated into a run folder whose method has not trained, so no trained result is ever replaced.
"""
from __future__ import annotations

from pathlib import Path

from mlc.config.params import RunParams
from mlc.core.io import atomic_write_json
from mlc.engine import stage
from mlc.engine.loop import make_loader, pick_device, predict
from mlc.engine.rundir import prepare_run_dir
from mlc.evaluation.open_vocab import evaluate_open_vocabulary
from mlc.metrics.multilabel import evaluate_scores, label_frequency_baseline, mean_average_precision
from mlc.modeling.method import Method
from mlc.runs.build import build_method
from mlc.runs.checkpoints import load, methods_to_load
from mlc.runs.data import method_data
from mlc.runs.resolve import method_params, no_such_method


class EvaluationConflictError(RuntimeError):
    """A checkpoint file was to be evaluated into a method folder that holds a training."""


def _uses_file(params: RunParams, name: str, checkpoint) -> bool:
    return checkpoint is not None or (params.released is not None and params.released.method == name)


def result_dir(params: RunParams, name: str, checkpoint=None) -> Path:
    """Where the evaluation of ``name`` goes: the run's method folder.  A trained run is evaluated only with the
    params it trained with (:class:`mlc.engine.rundir.RunConflictError` otherwise).  For weights from a file
    that folder must hold no training (its metrics would be replaced by another model's); the run folder is
    prepared (params.yaml) so the report finds the result."""
    out = params.run_dir / name
    if not _uses_file(params, name, checkpoint):
        if (params.run_dir / "params.yaml").is_file():
            # the run's own weights: its result-affecting params must be the ones it trained with (another
            # test world or label set would score the model on other data under the run's name)
            prepare_run_dir(params)
        return out
    state = stage.status(out)
    if state != "new":
        raise EvaluationConflictError(
            f"{out} holds a training of {name!r} ({state}); evaluating another checkpoint there would replace its "
            f"metrics. Evaluate under another run name: --set name={params.name}_checkpoint")
    prepare_run_dir(params)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _on_test(params: RunParams, name: str, device: str, checkpoint=None):
    """(method params, data, device, loaded model, test loader): what every test evaluation needs."""
    mp = method_params(params, name)
    data = method_data(params, name)
    dev = pick_device(device if device != "auto" else mp.train.device)
    loaded = load(params, name, checkpoint, device=str(dev), label_names=data.label_names)
    loader = make_loader(data.datasets["test"], mp.train.eval_batch_size, shuffle=False,
                         num_workers=params.data.num_workers)
    return mp, data, dev, loaded, loader


def evaluate_method(params: RunParams, name: str, device: str = "auto", progress: bool = True,
                    checkpoint: str | Path | None = None) -> dict:
    """Recompute the test scores and every metric on them, from the run's best checkpoint, or from
    ``checkpoint`` (a kit or official file; released params evaluate their ``released.checkpoint``).

    Returns ``{"scores", "targets", "label_names", "report", "weights"}``; the report holds mAP under both AP
    definitions, the threshold metrics and top-k variants, and the label-frequency baseline.  It is
    also written to ``outputs/<run>/<method>/metrics_test.json``.
    """
    out_dir = result_dir(params, name, checkpoint)
    mp, data, dev, loaded, loader = _on_test(params, name, device, checkpoint)
    model = loaded.model
    method = build_method(mp, len(data.labels), model=model)
    pred = predict(model, method, loader, dev, mp.train.amp, desc=f"test {name}", progress=progress)
    if pred["nonfinite"]:
        raise ValueError(f"{params.source}: method {name!r} ({loaded.weights.get('checkpoint', 'its weights')}): "
                         f"{pred['nonfinite']} of its test scores are NaN or infinite; nothing is evaluated or "
                         f"written (diverged or broken weights)")
    ev = params.eval
    report = evaluate_scores(pred["scores"], pred["targets"], ev.ap_mode, ev.empty_class, ev.threshold, ev.top_k)
    other = "noninterp" if ev.ap_mode == "voc" else "voc"
    report[f"mAP_{other}"] = mean_average_precision(pred["scores"], pred["targets"], other, ev.empty_class)[0]
    report["baseline_label_frequency_mAP"] = label_frequency_baseline(
        data.datasets["train"].targets(), pred["targets"], ev.ap_mode, ev.empty_class)
    report["test_loss"] = pred["loss"]
    report["n_images"] = int(len(pred["targets"]))
    atomic_write_json(out_dir / "metrics_test.json",
                      {"method": name, **report, "weights": loaded.weights, "label_names": data.label_names})
    return {"scores": pred["scores"], "targets": pred["targets"], "label_names": data.label_names,
            "report": report, "weights": loaded.weights}


def output_scores(params: RunParams, name: str, outputs: dict[str, str], device: str = "auto",
                  progress: bool = False) -> dict[str, dict]:
    """Test scores of several logit outputs of one finished run, e.g. SGRE's two branches:
    ``{"pixel level": "logits", "object level": "object_logits"}`` -> {name: {"scores", "targets"}}."""
    import torch
    mp, _, dev, loaded, loader = _on_test(params, name, device)
    model, out = loaded.model, {}
    for label, key in outputs.items():
        scorer = Method(model, loss_fn=None, scores_fn=lambda o, key=key: torch.sigmoid(o[key].float()))
        pred = predict(model, scorer, loader, dev, mp.train.amp, desc=f"test {name} ({key})", progress=progress)
        out[label] = {"scores": pred["scores"], "targets": pred["targets"]}
    return out


def output_maps(params: RunParams, name: str, outputs: dict[str, str], device: str = "auto",
                progress: bool = False) -> dict[str, float]:
    """Test mAP of several logit outputs of one finished run (:func:`output_scores`) -> {name: mAP}."""
    return {label: mean_average_precision(p["scores"], p["targets"], params.eval.ap_mode,
                                          params.eval.empty_class)[0]
            for label, p in output_scores(params, name, outputs, device, progress).items()}


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


def evaluate(params: RunParams, names: list[str] | None = None, checkpoint: str | Path | None = None,
             device: str = "auto", progress: bool = True) -> dict[str, dict]:
    """Evaluate each method (default: the released one, else every finished one) and, for open-vocabulary
    methods, write the SEEN / ZSL / GZSL report too.  Returns {method: metrics report}."""
    names = methods_to_load(params, names, checkpoint)
    if not names:
        raise FileNotFoundError(f"no finished method in {params.run_dir}; train one first "
                                f"(mlc train {params.source} --method M) or give --checkpoint")
    if checkpoint is not None and len(names) != 1:
        raise ValueError(f"--checkpoint is one model's weights: name its method with --method ({', '.join(names)})")
    reports = {}
    for name in names:
        if name not in params.methods:
            raise KeyError(no_such_method(params, name))
        result = evaluate_method(params, name, device, progress, checkpoint)
        reports[name] = result["report"]
        if params.methods[name].label_subset == "seen":
            evaluate_open_vocabulary(params, name, progress=progress, checkpoint=checkpoint)
    return reports


