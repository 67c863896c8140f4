"""Why run_all runs toy notebooks side by side: one toy training step on 1 thread, on 2, and two 1-thread
processes at once.

    python benchmarks/toy_threads.py [--methods q2l q2l_linear salgl sgre] [--threads 2] [--json out.json]

Each measurement is ``benchmarks/train_step.py`` (its ``baseline`` mode: forward, loss, backward, AdamW on a
synthetic batch, random weights) on ``params/toy.yaml`` in a fresh process with ``OMP_NUM_THREADS=k``, for
k = 1 and k = ``--threads``, then two 1-thread processes at the same time.  The toy models are small, so two
threads do far less than twice the work of one; two notebooks on one core each then finish before one after
the other on both.  Run it on a quiet machine; it writes the rows as JSON (default:
benchmarks/results_toy_threads.json).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOY_LABELS = 30                     # the toy world's labels (every closed-set toy method trains on all of them)


def _start(threads: int, methods: list[str], params: str, batch: int, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--params", params,
                             "--methods", ",".join(methods), "--modes", "baseline", "--batch", str(batch),
                             "--classes", str(TOY_LABELS), "--steps", "15", "--warmup", "3",
                             "--threads", str(threads), "--json", str(out)], stdout=subprocess.DEVNULL, env=env)


def _seconds(proc: subprocess.Popen, out: Path) -> dict[str, float]:
    if proc.wait():
        sys.exit(f"a timing process failed (exit {proc.returncode})")
    rows = json.loads(out.read_text())["rows"]
    failed = [r for r in rows if "error" in r]
    if failed:
        sys.exit(f"{failed[0]['method']}: {failed[0]['error']}")
    return {r["method"]: r["seconds_per_step"] for r in rows}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params" / "toy.yaml"))
    ap.add_argument("--methods", nargs="*", default=["q2l", "q2l_linear", "salgl", "sgre"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results_toy_threads.json"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "lib"))
    from mlc.config.params import load_params
    batches = {load_params(args.params).methods[m].train.batch_size for m in args.methods}
    if len(batches) != 1:
        sys.exit(f"the methods train with different batch sizes {sorted(batches)}: time them separately")
    batch = batches.pop()
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / f"{i}.json" for i in range(4)]
        one = _seconds(_start(1, args.methods, args.params, batch, files[0]), files[0])
        many = _seconds(_start(args.threads, args.methods, args.params, batch, files[1]), files[1])
        pair = [_start(1, args.methods, args.params, batch, f) for f in files[2:]]
        side_by_side = [_seconds(p, f) for p, f in zip(pair, files[2:])]
    rows = []
    print(f"{'method':12s} {'1 thread':>10s} {f'{args.threads} threads':>10s} {'2 x 1 at once':>14s} "
          f"{'throughput gain':>16s}")
    for m in args.methods:
        both = max(r[m] for r in side_by_side)         # each of the two processes' step while both ran
        gain = 2 * many[m] / both                      # steps per second: two 1-thread processes / one k-thread
        rows.append({"method": m, "ms_per_step_1_thread": round(1000 * one[m], 1),
                     f"ms_per_step_{args.threads}_threads": round(1000 * many[m], 1),
                     "ms_per_step_two_1_thread_processes_at_once": round(1000 * both, 1),
                     "throughput_two_processes_vs_one": round(gain, 2)})
        print(f"{m:12s} {1000 * one[m]:10.1f} {1000 * many[m]:10.1f} {1000 * both:14.1f} {gain:15.2f}x")
    Path(args.json).write_text(json.dumps({"params": args.params, "cpu_count": os.cpu_count(), "rows": rows},
                                          indent=1) + "\n")


if __name__ == "__main__":
    main()
