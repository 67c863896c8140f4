"""The reproduction report: every finished run under ``outputs/`` and the papers' numbers beside the kit's.

The papers' numbers live in ``mlc/evaluation/paper_numbers.csv`` (package data, built from ../shared/specs/paper-
numbers.md), each with its source and tag: P primary (the authors' own artefact), S secondary (re-typed by a third
party), R a third-party reproduction. A paper row is matched with the runs made from its params file.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from mlc.config.params import load_params
from mlc.core.io import metric_value
from mlc.engine import stage
from mlc.notebook.session import repo_root

PAPER_NUMBERS = Path(__file__).resolve().parent / "paper_numbers.csv"
WEIGHTS = {"trained": "trained by the kit", "released": "released weights, evaluated by the kit",
           "kit checkpoint": "a kit checkpoint file, evaluated by the kit"}


def _source_of(params_yaml: Path) -> str:
    first = params_yaml.read_text().splitlines()[0] if params_yaml.is_file() else ""
    source = first.removeprefix("# resolved from ").strip()
    try:
        return str(Path(source).resolve().relative_to(repo_root()))
    except ValueError:
        return source


def finished_runs(output_root: str | Path = "outputs") -> pd.DataFrame:
    """One row per (run, method) with a test evaluation: mAP, CF1, OF1 (%, closed set on the method's
    labels), for open-vocabulary methods ZSL and GZSL mAP (faithful), and for a trained run the CPU threads it
    trained with."""
    rows = []
    for params_yaml in sorted(Path(output_root).glob("*/params.yaml")):
        run_dir = params_yaml.parent
        stored = yaml.safe_load(params_yaml.read_text()) or {}
        for method in (stored.get("methods") or {}):
            test = run_dir / method / "metrics_test.json"
            if not test.is_file():
                continue
            m = json.loads(test.read_text())
            kind = (m.get("weights") or {}).get("kind", "trained")
            if kind == "trained" and not stage.is_finished(run_dir / method):   # failed or unfinished: no result
                continue
            row = {"run": run_dir.name, "params": _source_of(params_yaml), "method": method,
                   "weights": WEIGHTS[kind], "mAP": 100 * metric_value(m["mAP"]), "CF1": 100 * metric_value(m["CF1"]),
                   "OF1": 100 * metric_value(m["OF1"])}
            if kind == "trained":       # the CPU threads it trained with: part of what made its numbers
                row["CPU threads"] = json.loads((run_dir / method / stage.RESULT).read_text()).get("cpu_threads")
            zsl = run_dir / method / "metrics_zsl.json"
            if zsl.is_file():
                z = json.loads(zsl.read_text())["faithful"]
                row.update({"ZSL mAP": 100 * metric_value(z["ZSL"]["mAP"]),
                            "GZSL mAP": 100 * metric_value(z["GZSL"]["mAP"])})
            rows.append(row)
    return pd.DataFrame(rows)


def _kit_value(runs: pd.DataFrame, params_file: str, metric: str, weights: str) -> str:
    if not params_file:
        return "no kit config"
    if not len(runs) or metric not in runs:
        return "not run"
    match = runs[(runs["params"] == params_file) & (runs["weights"] == weights)][metric].dropna()
    return f"{match.iloc[-1]:.1f}" if len(match) else "not run"


def paper_comparison(runs: pd.DataFrame, paper_csv: str | Path = PAPER_NUMBERS) -> pd.DataFrame:
    """The papers' numbers with the kit's beside them: ``kit (trained)`` from runs of the row's params file,
    ``kit (released weights)`` from evaluations of the authors' released file (params/released/); ``not run``
    when there is none yet, ``no kit config`` when the kit has no params file for the row."""
    papers = pd.read_csv(paper_csv, dtype={"params_file": str, "released_params": str}, keep_default_na=False)
    out = papers.assign(
        **{"kit (trained)": [_kit_value(runs, p["params_file"], p["metric"], WEIGHTS["trained"])
                             for _, p in papers.iterrows()],
           "kit (released weights)": [_kit_value(runs, p["released_params"], p["metric"], WEIGHTS["released"])
                                      if p["released_params"] else "none released"
                                      for _, p in papers.iterrows()]})
    out = out.rename(columns={"paper": "method", "value": "paper value", "source_tag": "tag"})
    return out[["method", "dataset", "setting", "metric", "paper value", "kit (trained)", "kit (released weights)",
                "tag", "source", "params_file", "released_params"]]


def rows_without_params(paper_csv: str | Path = PAPER_NUMBERS) -> pd.DataFrame:
    """The papers' rows for which the kit has no params file yet (what the reproduction does not cover)."""
    papers = pd.read_csv(paper_csv, dtype={"params_file": str}, keep_default_na=False)
    return papers[papers["params_file"] == ""][["paper", "dataset", "setting", "metric", "value", "source"]]


def released_models(params_dir: str | Path | None = None) -> pd.DataFrame:
    """Every released official model the kit can evaluate (params/released/): its params file, the file it
    expects and whether it is there, the number its authors (or a third party) give, and how to get it."""
    params_dir = Path(params_dir) if params_dir else repo_root() / "params" / "released"
    rows = []
    for f in sorted(params_dir.glob("*.yaml")):
        p = load_params(f)
        r = p.released
        if r is None:
            continue
        path = p.resolve_path(r.checkpoint)
        rows.append({"method": p.methods[r.method].model_name, "released model": r.model_name,
                     "params file": str(f.relative_to(repo_root())) if f.is_relative_to(repo_root()) else str(f),
                     "metric": r.paper_metric, "published": r.paper_value, "source": r.paper_source,
                     "checkpoint": r.checkpoint, "present": path.is_file(), "download": r.download})
    return pd.DataFrame(rows)
