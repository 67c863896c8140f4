"""Each paper's claim over several training seeds (issue 22, part 3): the comparison every training notebook
makes, run on each seed, as paired differences with their mean and standard error.

    python benchmarks/seed_spread.py [--params params/toy.yaml] [--seeds 0 1 2] [--output-root DIR]

Each seed runs the data, CLIP, embedding, training and evaluation notebooks through ``mlc.pipeline`` with
``--set seed=S name=<name>_seedS`` (the params' own seed keeps the run's own name, so a finished toy run is
reused), then measures each claim (``mlc.evaluation.seed_spread.claim_difference``).  The world stays the same:
``seed`` seeds the training (and the toy CLIP's), ``data.toy.seed`` the world.  It writes
``benchmarks/results_seed_spread.json`` with the world's key and the recipe's (``recipe_key``): the notebooks
show its numbers only for runs of the same world and recipe.  A claim holds over seeds only if its mean paired
difference exceeds twice its standard error.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["01_", "02_", "03_", "10_", "11_", "12_", "13_", "14_", "20_"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _run_pipeline(command: list[str]) -> tuple[int, dict[str, int]]:
    """Run the pipeline, showing its lines as they come: (exit code, seconds per notebook as it printed them)."""
    notebook_seconds = {}
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            done = re.match(r"\s+(\S+\.ipynb) done in (\d+) s", line)
            if done:
                notebook_seconds[done.group(1)] = int(done.group(2))
    return proc.returncode, notebook_seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params/toy.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--output-root", default=None, help="where the seeds' runs go (default: the params')")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_seed_spread.json")
    ap.add_argument("--measure-only", action="store_true",
                    help="measure the seeds' finished runs again without running the notebooks (after a change to "
                         "a measurement); the timings are kept from --out")
    args = ap.parse_args(argv)
    from mlc.config.params import load_params
    from mlc.core.io import atomic_write_json
    from mlc.core.registry import CLAIMS
    from mlc.evaluation.mechanisms import mechanism_differences
    from mlc.evaluation.seed_spread import claim_difference, recipe_key, summarize, summarize_groups, world_key
    from mlc.runs.data import prepare_data

    params_file = str(Path(args.params).resolve())
    base = load_params(params_file, output_root=args.output_root)
    per_seed, per_seed_mechanisms, timings = {}, {}, {}
    for seed in args.seeds:
        name = base.name if seed == base.seed else f"{base.name}_seed{seed}"
        sets = [f"seed={seed}", f"name={name}"]
        command = [sys.executable, "-m", "mlc.pipeline", params_file, "--set", *sets, "--only", *NOTEBOOKS]
        if args.output_root:
            command += ["--output-root", args.output_root]
        if args.measure_only:
            timings[str(seed)] = json.loads(args.out.read_text())["seconds_per_seed"][str(seed)]
        else:
            print(f">> seed {seed}: {' '.join(command[2:])}", flush=True)
            t0 = time.time()
            code, notebook_seconds = _run_pipeline(command)
            if code != 0:
                print(f"seed {seed} failed (exit {code})", file=sys.stderr)
                return 1
            timings[str(seed)] = {"total": round(time.time() - t0, 1), "notebooks": notebook_seconds}
        params = load_params(params_file, set_args=sets, output_root=args.output_root)
        claimed = [m for m, mp in params.methods.items() if mp.baseline_for is None and CLAIMS.find(mp.model_name)
                   and (CLAIMS.find(mp.model_name).shown is None or CLAIMS.find(mp.model_name).shown(mp))]
        per_seed[str(seed)] = {m: claim_difference(params, m) for m in claimed}
        for m, d in per_seed[str(seed)].items():
            diff = "n/a" if d["difference"] is None else f"{d['difference']:+.2f}"
            print(f"   seed {seed} {m}: {d['metric']} {d['value']:.2f}, paired difference {diff}", flush=True)
        if params.data.dataset == "toy":        # where each gain comes from (mlc.evaluation.mechanisms)
            manifest = prepare_data(params, progress=False)
            per_seed_mechanisms[str(seed)] = {m: mechanism_differences(params, m, manifest) for m in claimed
                                              if params.methods[m].label_subset != "seen"}
            for m, gains in per_seed_mechanisms[str(seed)].items():
                print(f"   seed {seed} {m} gain by group: "
                      + ", ".join(f"{g} {v:+.1f}" for g, v in gains.items()), flush=True)
    summary = summarize(per_seed)
    mechanisms = summarize_groups(per_seed_mechanisms)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    import torch
    record = {"params": os.path.relpath(params_file, ROOT), "world_key": world_key(base),
              "recipe_key": recipe_key(base), "seeds": args.seeds, "made": time.strftime("%Y-%m-%d"),
              "commit": commit, "cpu": cpu_model(), "torch": torch.__version__, "threads_per_notebook": "run_all's",
              "seconds_per_seed": timings, "per_seed": per_seed, "summary": summary,
              "mechanisms_per_seed": per_seed_mechanisms, "mechanisms": mechanisms,
              "rule": "a claim holds over seeds if its mean paired difference exceeds twice its standard error"}
    if args.measure_only:                  # the runs are those of the recorded commit; measured again at this one
        previous = json.loads(args.out.read_text())
        record.update(commit=previous["commit"], made=previous["made"], measured_again={
            "commit": commit, "date": time.strftime("%Y-%m-%d")})
    atomic_write_json(args.out, record)
    for m, s in summary.items():
        se = "n/a" if s["standard_error"] is None else f"{s['standard_error']:.2f}"
        print(f"{m}: mean paired difference {s['mean_difference']:+.2f} (standard error {se}, n={s['n']}): "
              f"{'holds' if s['holds'] else 'does not hold' if s['holds'] is False else 'cannot be judged'}")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
