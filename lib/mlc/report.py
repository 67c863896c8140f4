"""The reproduction report: every finished run under ``outputs/`` and the papers' numbers beside the kit's.

The papers' numbers live in ``mlc/paper_numbers.csv`` (package data, built from ../shared/specs/paper-numbers.md), each
with its source and tag: P primary (the authors' own artefact), S secondary (re-typed by a third party),
R a third-party reproduction.  A paper row is matched with the runs made from its params file.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from . import stage
from .notebook import repo_root

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
    labels) and, for open-vocabulary methods, ZSL and GZSL mAP (faithful)."""
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
                   "weights": WEIGHTS[kind], "mAP": 100 * m["mAP"], "CF1": 100 * m["CF1"], "OF1": 100 * m["OF1"]}
            zsl = run_dir / method / "metrics_zsl.json"
            if zsl.is_file():
                z = json.loads(zsl.read_text())["faithful"]
                row.update({"ZSL mAP": 100 * z["ZSL"]["mAP"], "GZSL mAP": 100 * z["GZSL"]["mAP"]})
            rows.append(row)
    return pd.DataFrame(rows)


def paper_comparison(runs: pd.DataFrame, paper_csv: str | Path = PAPER_NUMBERS) -> pd.DataFrame:
    """The papers' numbers with the kit's beside them (``not run`` when no run used that params file)."""
    papers = pd.read_csv(paper_csv, dtype={"params_file": str}, keep_default_na=False)
    kit = []
    for _, p in papers.iterrows():
        value = "not run" if p["params_file"] else "no kit config"
        if p["params_file"] and len(runs):
            match = runs[runs["params"] == p["params_file"]]
            metric = p["metric"]
            if len(match) and metric in match:
                v = match[metric].dropna()
                value = f"{v.iloc[-1]:.1f}" if len(v) else "not run"
        kit.append(value)
    out = papers.assign(kit=kit)
    out = out.rename(columns={"paper": "method", "value": "paper value", "source_tag": "tag"})
    return out[["method", "dataset", "setting", "metric", "paper value", "kit", "tag", "source", "params_file"]]
