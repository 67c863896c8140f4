"""How many fine-tuning epochs each toy recipe needs, read from validation curves (issue 22, part 4).

    python benchmarks/toy_epochs.py [--params params/toy.yaml] [--epochs q2l=4,6,8 sgre=4,6,8 ...] [--jobs N]

Each candidate trains the method (with its baseline, on the same epochs: a paper compares both on one recipe)
through ``mlc train`` with ``--set methods.M.train.epochs=E name=<name>_epochsE``, one thread a process and
``--jobs`` processes at once (as ``run_all`` runs the notebooks).  The schedule is the recipe's own (one-cycle or
cosine over the shorter run), so a shorter recipe is a different curve, not a cut of the longer one.  Only the
validation split is read.  For each method it records the last and best validation mAP of every candidate, the
training seconds, and the rule's choice, for the method and for its baseline each: the fewest epochs whose best
validation mAP is within ``--tolerance`` points (default 1) of the longest candidate's.  A claim then compares
models that have each converged, as far as validation can tell; a baseline that needs more epochs than its method
gets them (a cheap one, such as Q2L's linear head, costs little).  It writes ``benchmarks/results_toy_epochs.json``
with the CPU model, so the choice is rerunnable; ``--choose-only`` applies the rule again to that file.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from seed_spread import cpu_model  # noqa: E402

from mlc.core.cpu import usable_cores  # noqa: E402
from mlc.core.progress import PROGRESS_ENV  # noqa: E402

# the current recipe's epochs are the longest candidate: the reference every shorter one is held against
DEFAULT_CANDIDATES = {"q2l": [4, 6, 8, 12], "salgl": [3, 4, 6], "sgre": [4, 6, 8, 12], "mkt": [2, 3, 5],
                      "qks": [4, 6, 10]}
STAGE_AFTER = {"mkt": "mkt_prompt"}        # a second stage trained after the method, on its own recipe


def _history(run_dir: Path) -> dict:
    rows = list(csv.DictReader(open(run_dir / "history.csv")))
    curve = [round(100 * float(r["val_mAP_live"]), 2) for r in rows if r.get("val_mAP_live")]
    return {"val_mAP": curve, "last": curve[-1] if curve else None, "best": max(curve) if curve else None,
            "train_seconds": round(sum(float(r["epoch_seconds"]) for r in rows), 1)}


def _train(params: str, methods: list[str], sets: list[str], log: Path, output_root: str | None) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", PROGRESS_ENV: "lines"}
    code = 0
    with open(log, "w") as out:
        for m in methods:
            command = [sys.executable, "-m", "mlc.train", params, "--method", m, "--set", *sets]
            if output_root:
                command += ["--output-root", output_root]
            code = subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
            if code:
                break
    return code


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params/toy.yaml")
    ap.add_argument("--epochs", nargs="*", default=[], metavar="METHOD=E,E",
                    help="candidates per method, only these methods (default: " +
                         " ".join(f"{m}={','.join(map(str, e))}" for m, e in DEFAULT_CANDIDATES.items()) + ")")
    ap.add_argument("--jobs", type=int, default=usable_cores())
    ap.add_argument("--tolerance", type=float, default=1.0, help="validation mAP points a shorter recipe may lose")
    ap.add_argument("--output-root", default=None)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="more overrides for every candidate, e.g. methods.q2l.train.lr=2e-3 (another recipe than "
                         "the params'; give it a --tag so that its runs do not meet the plain sweep's)")
    ap.add_argument("--tag", default="", help="added to the candidates' run names")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_toy_epochs.json")
    ap.add_argument("--choose-only", action="store_true", help="apply the rule again to the results in --out")
    args = ap.parse_args(argv)
    if args.choose_only:
        from mlc.core.io import atomic_write_json
        record = json.loads(args.out.read_text())
        record.update(choice=choose(record["results"], args.tolerance), rule=rule_text(args.tolerance))
        atomic_write_json(args.out, record)
        report(record)
        return 0
    from mlc.config.params import load_params
    from mlc.core.io import atomic_write_json
    from mlc.runs.data import prepare_data
    from mlc.runs.embeddings import build_run_embeddings
    from mlc.runs.toy_clip import train_toy_clip

    candidates = {} if args.epochs else dict(DEFAULT_CANDIDATES)     # --epochs: only the methods it names
    for item in args.epochs:
        method, _, values = item.partition("=")
        candidates[method] = [int(v) for v in values.split(",")]
    params_file = str(Path(args.params).resolve())
    base = load_params(params_file, output_root=args.output_root)
    unknown = [m for m in candidates if m not in base.methods]
    if unknown:
        ap.error(f"--epochs names methods that {args.params} does not configure: {', '.join(unknown)}")
    # the data and the label-embedding tables are built once here, not raced for by the parallel trainings
    manifest = prepare_data(base, progress=False)
    if base.clip is not None and not base.clip.pretrained:
        train_toy_clip(base, manifest, progress=False)        # installs the shipped toy CLIP where its key matches
    build_run_embeddings(base, manifest=manifest, progress=False)
    baselines = {mp.baseline_for: m for m, mp in base.methods.items() if mp.baseline_for}
    jobs = []
    for method, epochs in candidates.items():
        for e in epochs:
            group = [method] + ([baselines[method]] if method in baselines else []) + \
                    ([STAGE_AFTER[method]] if method in STAGE_AFTER else [])
            name = f"{base.name}_epochs{args.tag}_{method}{e}"
            sets = [f"name={name}", *args.set] + [f"methods.{m}.train.epochs={e}" for m in group
                                                  if m not in STAGE_AFTER.values()]
            jobs.append((method, e, group, name, sets))
    log_dir = Path(base.output_root) / f"{base.name}_epochs{args.tag}_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def run(job):
        method, e, group, name, sets = job
        code = _train(params_file, group, sets, log_dir / f"{method}{e}.log", args.output_root)
        print(f"   {method} {e} epochs: {'done' if code == 0 else f'FAILED (exit {code})'} "
              f"at {time.time() - t0:.0f} s", flush=True)
        return code

    print(f"{len(jobs)} candidate recipes, {args.jobs} at a time; logs in {log_dir}", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:      # longest first, so that no process is left alone at the end
        codes = list(pool.map(run, sorted(jobs, key=lambda j: -j[1] * (2 if j[0] in ("q2l", "sgre") else 1))))
    if any(codes):
        print(f"some trainings failed; see {log_dir}", file=sys.stderr)
        return 1
    results = {}
    for method, e, group, name, _ in jobs:
        run_dir = Path(base.output_root) / name
        results.setdefault(method, {})[str(e)] = {m: _history(run_dir / m) for m in group}
    import torch
    record = {"params": os.path.relpath(params_file, ROOT), "made": time.strftime("%Y-%m-%d"),
              "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip(),
              "cpu": cpu_model(), "torch": torch.__version__, "threads_per_training": 1, "jobs": args.jobs,
              "overrides": args.set,
              "rule": rule_text(args.tolerance), "candidates": candidates, "results": results,
              "choice": choose(results, args.tolerance), "seconds": round(time.time() - t0, 1)}
    atomic_write_json(args.out, record)
    report(record)
    print(f"written {args.out}")
    return 0


def rule_text(tolerance: float) -> str:
    return (f"for each model (a method, its baseline): the fewest epochs whose best validation mAP is within "
            f"{tolerance} points of the longest candidate's; a later stage keeps its own recipe")


def choose(results: dict, tolerance: float) -> dict[str, int]:
    """The rule (:func:`rule_text`) on ``{method: {epochs: {model: history}}}`` -> {model: epochs}."""
    choice = {}
    for method, by_epochs in results.items():
        longest = by_epochs[str(max(int(e) for e in by_epochs))]
        for model in longest:
            if model in STAGE_AFTER.values():
                continue
            choice[model] = min(int(e) for e, runs in by_epochs.items()
                                if runs[model]["best"] >= longest[model]["best"] - tolerance)
    return choice


def training_seconds(results: dict, epochs_of) -> float:
    """The training seconds of every model (later stages too) at the candidate ``epochs_of(method, [candidates])``
    of its method: what the toy run's trainings cost, one thread each, at those epochs."""
    total = 0.0
    for method, by_epochs in results.items():
        e = str(epochs_of(method, sorted(int(k) for k in by_epochs)))
        total += sum(r["train_seconds"] for r in by_epochs[e].values())
    return total


def budget(record: dict) -> dict[str, float]:
    """Training seconds summed over the models at the rule's choice (a method's; its baseline's when they differ
    is not separable, so the method's candidate stands for both), at the longest and at the shortest candidates:
    how much time any epoch cut can save at all."""
    results, choice = record["results"], record["choice"]
    return {"chosen": training_seconds(results, lambda m, c: choice.get(m, max(c))),
            "longest": training_seconds(results, lambda m, c: max(c)),
            "shortest": training_seconds(results, lambda m, c: min(c))}


def report(record: dict) -> None:
    for method, by_epochs in record["results"].items():
        for e, runs in sorted(by_epochs.items(), key=lambda kv: int(kv[0])):
            print(f"{method:6s} {e:>2s} epochs: " + "; ".join(
                f"{m} best val {r['best']:.1f} (last {r['last']:.1f}), {r['train_seconds']:.0f} s"
                for m, r in runs.items()))
    print("chosen: " + ", ".join(f"{m} {e} epochs" for m, e in record["choice"].items()))
    b = budget(record)
    print(f"training seconds, one thread each, summed over the models: {b['chosen']:.0f} at the chosen epochs, "
          f"{b['longest']:.0f} at the longest candidates, {b['shortest']:.0f} at the shortest")


if __name__ == "__main__":
    sys.exit(main())
