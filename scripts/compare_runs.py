"""Are two runs' results the same, bit for bit?  For checking that a change which should change no number
(a refactoring, a faster loader) changes none.

    python scripts/compare_runs.py OLD_RUN_DIR NEW_RUN_DIR      # e.g. two outputs/toy_ci folders

Compares every result file under the first folder with its twin under the second: JSON and JSON-lines files
value for value (a key only the second run has, such as a setting a newer kit records, is listed, not counted
as a difference), score arrays (``.npz``, ``.npy``) and checkpoint tensors (``.pt``) exactly, CSV tables cell for
cell, and other data files (``.parquet``) byte for byte.  What differs between two identical runs anyway is left
out: wall-clock times (keys and columns naming seconds, times or dates), absolute paths, the executed notebooks
and the TensorBoard event files.  Exits 1 when a file differs or is missing.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np

TIMING = ("seconds", "time", "started", "finished", "elapsed", "wall", "duration", "date", "created")
ENVIRONMENT = ("host", "python", "commit", "sha256", "path", "checkpoint")
SKIPPED_FOLDERS = {"notebooks", "tensorboard", "figures"}


def _clean(x):
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items() if not any(s in k.lower() for s in TIMING + ENVIRONMENT)}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    if isinstance(x, str) and x.startswith("/"):
        return "<path>"
    return x


ADDED: set[str] = set()


def _same(old, new, prefix="") -> bool:
    """Equal values; a key only the new run has (a setting a newer kit records) is noted, not a difference."""
    if isinstance(old, dict) and isinstance(new, dict):
        ADDED.update(f"{prefix}{k}" for k in set(new) - set(old))
        return all(k in new and _same(old[k], new[k], f"{prefix}{k}.") for k in old)
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(_same(a, b, prefix) for a, b in zip(old, new))
    if all(x is None or (isinstance(x, float) and math.isnan(x)) for x in (old, new)):
        return True                       # a class without positives: AP NaN, or null in strict JSON
    return old == new


def _tensors(x, prefix=""):
    import torch
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _tensors(v, f"{prefix}.{k}")
    elif isinstance(x, torch.Tensor):
        yield prefix, x


def same_file(a: Path, b: Path) -> bool | None:
    """Whether two result files hold the same results; None for a kind of file that is not compared."""
    if a.suffix == ".json":
        return _same(_clean(json.loads(a.read_text())), _clean(json.loads(b.read_text())))
    if a.suffix == ".jsonl":
        return _same([_clean(json.loads(x)) for x in a.read_text().splitlines()],
                     [_clean(json.loads(x)) for x in b.read_text().splitlines()])
    if a.suffix == ".npz":
        za, zb = np.load(a), np.load(b)
        return set(za) == set(zb) and all(np.array_equal(za[k], zb[k]) for k in za)
    if a.suffix == ".npy":
        return np.array_equal(np.load(a), np.load(b))
    if a.suffix == ".csv":
        import pandas as pd
        da, db = pd.read_csv(a), pd.read_csv(b)
        keep = [c for c in da.columns if not any(s in c.lower() for s in TIMING)]
        return list(da.columns) == list(db.columns) and da[keep].equals(db[keep])
    if a.suffix == ".pt":
        import torch
        ta = dict(_tensors(torch.load(a, map_location="cpu", weights_only=False)))
        tb = dict(_tensors(torch.load(b, map_location="cpu", weights_only=False)))
        return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    if a.suffix == ".parquet":
        return hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    args = ap.parse_args(argv)
    same, problems = 0, []
    for a in sorted(p for p in args.old.rglob("*") if p.is_file()):
        rel = a.relative_to(args.old)
        if SKIPPED_FOLDERS & set(rel.parts) or rel.name.startswith("events.out.tfevents."):
            continue                      # TensorBoard's file names hold the host and the time
        b = args.new / rel
        if not b.is_file():
            problems.append(f"missing in {args.new}: {rel}")
            continue
        verdict = same_file(a, b)
        if verdict is None:
            continue
        if verdict:
            same += 1
        else:
            problems.append(f"differs: {rel}")
    print("\n".join(problems))
    added = f" (keys only the new run records: {', '.join(sorted(ADDED))})" if ADDED else ""
    print(f"{same} result files identical, {len(problems)} differ or are missing{added}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
