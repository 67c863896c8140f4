"""Each paper's claim over several training seeds, as a paper would measure it: the paired difference between the
method and the best of what its paper compares it with, on each seed, then their mean and standard error.  A claim
*holds over seeds* only if the mean paired difference exceeds twice its standard error.

``benchmarks/seed_spread.py`` trains the seeds and writes ``benchmarks/results_seed_spread.json``; the notebooks
show a run's own claim beside that file's mean and spread when the file was made for the same toy world and the
same recipe (:func:`recipe_key`), and say so instead of showing stale numbers when it was not.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
from pathlib import Path

import pandas as pd

from mlc.config.params import RunParams, params_to_dict
from mlc.engine.rundir import _flatten, _is_non_result
from mlc.evaluation.claims import measure

SPREAD_FILE = Path("benchmarks") / "results_seed_spread.json"


def world_key(params: RunParams) -> str | None:
    """The toy world's key (what determines its images), or None for a real dataset."""
    return params.data.toy.key() if params.data.dataset == "toy" else None


def recipe_key(params: RunParams) -> str:
    """A key of every result-affecting setting except the training seed and the run's name: two runs with the
    same key differ only in their seed."""
    flat = {k: v for k, v in _flatten(params_to_dict(params)).items()
            if not _is_non_result(k) and k not in ("seed", "name")}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:12]


def claim_difference(params: RunParams, method: str) -> dict:
    """One run's claim as numbers: the method's value, its comparisons', and the paired difference against
    the best comparison (None where a run is missing)."""
    m = measure(params, method)
    values = list(m["values"].items())
    mine = values[0][1]
    others = {k: v for k, v in values[1:] if v is not None}
    difference = None if mine is None or not others else mine - max(others.values())
    return {"metric": m["metric"], "value": mine, "compared with": others, "difference": difference}


def summarize(per_seed: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """``{seed: {method: claim_difference}}`` -> per method: the differences by seed, their mean, standard error
    (sample standard deviation / sqrt(n)), and whether the mean exceeds twice the standard error."""
    methods = sorted({m for runs in per_seed.values() for m in runs})
    out = {}
    for method in methods:
        diffs = {seed: runs[method]["difference"] for seed, runs in per_seed.items()
                 if method in runs and runs[method]["difference"] is not None}
        values = {seed: runs[method]["value"] for seed, runs in per_seed.items()
                  if method in runs and runs[method]["value"] is not None}
        n = len(diffs)
        mean = statistics.mean(diffs.values()) if n else None
        se = statistics.stdev(diffs.values()) / math.sqrt(n) if n > 1 else None
        out[method] = {"differences": diffs, "values": values, "n": n, "mean_difference": mean,
                       "standard_error": se,
                       "value_mean": statistics.mean(values.values()) if values else None,
                       "value_std": statistics.stdev(values.values()) if len(values) > 1 else None,
                       "holds": None if se is None else bool(mean > 2 * se)}
    return out


def summarize_groups(per_seed: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict]]:
    """``{seed: {method: {group: gain}}}`` (:func:`mlc.evaluation.mechanisms.mechanism_differences`) -> per
    method and group: the gains by seed, their mean, standard error, and whether the mean exceeds twice it."""
    out: dict[str, dict[str, dict]] = {}
    for seed, runs in per_seed.items():
        for method, gains in runs.items():
            for group, gain in gains.items():
                if gain is not None and not math.isnan(gain):
                    out.setdefault(method, {}).setdefault(group, {"gains": {}})["gains"][seed] = gain
    for groups in out.values():
        for entry in groups.values():
            g = list(entry["gains"].values())
            entry["n"] = len(g)
            entry["mean_gain"] = statistics.mean(g)
            entry["standard_error"] = statistics.stdev(g) / math.sqrt(len(g)) if len(g) > 1 else None
            entry["holds"] = None if entry["standard_error"] is None else bool(
                entry["mean_gain"] > 2 * entry["standard_error"])
    return out


def mechanism_spread(params: RunParams, method: str, path: str | Path | None = None) -> tuple[pd.DataFrame | None,
                                                                                               str]:
    """(a table: per group, the method's mean gain over its baseline across seeds, its standard error and whether
    it holds; where the numbers come from), or (None, why not) for a notebook beside this run's own gains."""
    spread, note = load_spread(params, path)
    if spread is None or method not in spread.get("mechanisms", {}):
        return None, note
    rows = {group: {"mean gain over seeds": round(e["mean_gain"], 1),
                    "standard error": None if e["standard_error"] is None else round(e["standard_error"], 1),
                    "seeds": e["n"],
                    "holds": {True: "yes", False: "no", None: "cannot be judged"}[e["holds"]]}
            for group, e in spread["mechanisms"][method].items()}
    return pd.DataFrame(rows).T, note


def load_spread(params: RunParams, path: str | Path | None = None) -> tuple[dict | None, str]:
    """The seed-spread results for these params' world and recipe, and a sentence on where they come from (or
    why they do not apply: no file, another world, another recipe)."""
    path = Path(path) if path is not None else Path(params.base_dir or ".") / SPREAD_FILE
    try:
        spread = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, f"no seed-spread results ({path}: run python benchmarks/seed_spread.py)"
    if spread.get("world_key") != world_key(params):
        return None, (f"the seed-spread results in {path.name} were made for another toy world "
                      f"({spread.get('world_key')}, this run's is {world_key(params)}): not shown")
    if spread.get("recipe_key") != recipe_key(params):
        return None, (f"the seed-spread results in {path.name} were made for another recipe "
                      f"({spread.get('recipe_key')}, this run's is {recipe_key(params)}): not shown")
    seeds = ", ".join(str(s) for s in spread.get("seeds", []))
    return spread, f"over seeds {seeds} ({path.name}, {spread.get('made', 'date unknown')})"


def with_spread(claims_table: pd.DataFrame, params: RunParams, path: str | Path | None = None) -> pd.DataFrame:
    """The claims table (``claims.all_claims``, indexed by method) with the seed-spread columns beside this run's
    numbers: the mean paired difference, its standard error, the seeds, and whether the claim holds over them."""
    spread, note = load_spread(params, path)
    table = claims_table.copy()
    table.attrs["seed_spread"] = note
    if spread is None:
        return table
    summary = spread["summary"]
    table["difference over seeds"] = [
        None if m not in summary or summary[m]["mean_difference"] is None else
        f"{summary[m]['mean_difference']:+.1f} ± {summary[m]['standard_error'] or 0:.1f} (n={summary[m]['n']})"
        for m in table.index]
    table["holds over seeds"] = [
        "not measured" if m not in summary or summary[m]["holds"] is None else
        ("yes" if summary[m]["holds"] else "no") for m in table.index]
    return table


def spread_sentence(params: RunParams, method: str, path: str | Path | None = None) -> str:
    """One line for a method notebook: this run's paired difference beside the seeds' mean and spread."""
    mine = claim_difference(params, method)["difference"]
    spread, note = load_spread(params, path)
    here = "not measured" if mine is None else f"{mine:+.1f}"
    if spread is None or method not in spread["summary"]:
        return f"paired difference on this run: {here}; {note}"
    s = spread["summary"][method]
    verdict = {True: "holds", False: "does not hold", None: "cannot be judged"}[s["holds"]]
    se = "n/a" if s["standard_error"] is None else f"{s['standard_error']:.1f}"
    return (f"paired difference on this run: {here}; {note}: mean {s['mean_difference']:+.1f}, standard error "
            f"{se} over {s['n']} seeds, so the claim {verdict} beyond the seed-to-seed spread (it must exceed "
            f"twice the standard error)")
