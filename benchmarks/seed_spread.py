"""Test mAP of one toy method over several seeds: how far a toy result moves when only the seed changes.

    python benchmarks/seed_spread.py --method salgl --seeds 0 1 2 [--params params/toy.yaml]
    python benchmarks/seed_spread.py --method qks --zsl         # open vocabulary: also the ZSL mAP (unseen labels)

Each seed trains through ``python -m mlc.train PARAMS --method M --set seed=S name=<name>_seedS`` (seed 0
keeps the params' own run name, so an existing toy run is reused) and reads the run's ``result.json``.
Prints one line per seed, then the mean and the spread.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params/toy.yaml")
    ap.add_argument("--method", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--zsl", action="store_true", help="also score the unseen labels "
                    "(mlc.evaluation.open_vocab; MKT, QKS)")
    args = ap.parse_args()
    from mlc.config.params import load_params
    base = load_params(args.params)
    scores, zsl_scores = {}, {}
    for seed in args.seeds:
        name = base.name if seed == base.seed else f"{base.name}_seed{seed}"
        params = load_params(args.params, set_args=[f"seed={seed}", f"name={name}"])
        if args.zsl and base.clip is not None:          # the toy CLIP depends on the seed: pretrain it first
            from mlc.runs.data import prepare_data
            from mlc.runs.toy_clip import clip_checkpoint, train_toy_clip
            if not clip_checkpoint(params).is_file():
                train_toy_clip(params, prepare_data(params, progress=False), progress=False)
        run = subprocess.run([sys.executable, "-m", "mlc.train", args.params, "--method", args.method,
                              "--set", f"seed={seed}", f"name={name}"], capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"seed {seed} failed:\n{run.stderr[-2000:]}")
        result = json.loads((params.run_dir / args.method / "result.json").read_text())
        scores[seed] = 100 * result["test"]["mAP"]
        zsl = ""
        if args.zsl:
            from mlc.evaluation.open_vocab import evaluate_open_vocabulary
            report = evaluate_open_vocabulary(params, args.method, progress=False)["report"]
            zsl_scores[seed] = 100 * report["faithful"]["ZSL"]["mAP"]
            zsl = f", ZSL mAP {zsl_scores[seed]:.2f}"
        print(f"seed {seed}: test mAP {scores[seed]:.2f}{zsl} ({params.run_dir / args.method})", flush=True)
    for what, table in (("test mAP", scores), ("ZSL mAP", zsl_scores)):
        values = list(table.values())
        if values:
            print(f"{what}: mean {statistics.mean(values):.2f}, min {min(values):.2f}, max {max(values):.2f}"
                  + (f", std {statistics.stdev(values):.2f}" if len(values) > 1 else ""))


if __name__ == "__main__":
    main()
