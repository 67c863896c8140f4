"""Why run_all runs toy notebooks side by side: one toy training step on 1 thread, on 2, and two 1-thread
processes at once.

    python benchmarks/toy_threads.py [--methods q2l q2l_linear salgl sgre] [--threads 2] [--json out.json]

For each method of ``params/toy.yaml`` (random weights, a synthetic batch of the toy's size) it times training
steps (forward, loss, backward, AdamW) in a fresh process with ``torch.set_num_threads(k)``, for k = 1 and k =
``--threads``, then runs two 1-thread processes at the same time.  The toy models are small, so two threads do
far less than twice the work of one; two notebooks on one core each then finish before one after the other on
both.  Run it on a quiet machine; it writes the rows as JSON (default: benchmarks/results_toy_threads.json).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_STEP = r"""
import json, sys, time, torch
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(int(sys.argv[2]))
from mlc.params import load_params
from mlc.train import method_params, untrained_method
params = load_params(sys.argv[3])
out = {}
for name in sys.argv[4].split(","):
    torch.manual_seed(0)
    mp = method_params(params, name)
    classes = 30
    method = untrained_method(mp, classes)
    model = method.model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    b, size = mp.train.batch_size, mp.input.image_size
    x, t = torch.randn(b, 3, size, size), (torch.rand(b, classes) > 0.8).float()
    def step():
        loss = method.loss_fn(method.forward_fn(model, x, t), t)["loss"]
        opt.zero_grad(); loss.backward(); opt.step()
    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(15):
        step()
    out[name] = (time.perf_counter() - t0) / 15
print(json.dumps(out))
"""


def _run(threads: int, methods: list[str], params: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, "-c", _STEP, str(ROOT / "lib"), str(threads), params, ",".join(methods)],
                            stdout=subprocess.PIPE, text=True, env=env)


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        sys.exit(f"a timing process failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params" / "toy.yaml"))
    ap.add_argument("--methods", nargs="*", default=["q2l", "q2l_linear", "salgl", "sgre"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results_toy_threads.json"))
    args = ap.parse_args(argv)
    one = _result(_run(1, args.methods, args.params))
    many = _result(_run(args.threads, args.methods, args.params))
    a, b = _run(1, args.methods, args.params), _run(1, args.methods, args.params)
    side_by_side = [_result(a), _result(b)]
    rows = []
    print(f"{'method':12s} {'1 thread':>10s} {f'{args.threads} threads':>10s} {'2 x 1 at once':>14s} "
          f"{'throughput gain':>16s}")
    for m in args.methods:
        pair = max(r[m] for r in side_by_side)         # each of the two processes' step while both ran
        gain = 2 * many[m] / pair                      # steps per second: two 1-thread processes / one k-thread
        rows.append({"method": m, "ms_per_step_1_thread": round(1000 * one[m], 1),
                     f"ms_per_step_{args.threads}_threads": round(1000 * many[m], 1),
                     "ms_per_step_two_1_thread_processes_at_once": round(1000 * pair, 1),
                     "throughput_two_processes_vs_one": round(gain, 2)})
        print(f"{m:12s} {1000 * one[m]:10.1f} {1000 * many[m]:10.1f} {1000 * pair:14.1f} {gain:15.2f}x")
    Path(args.json).write_text(json.dumps({"params": args.params, "cpu_count": os.cpu_count(), "rows": rows},
                                          indent=1) + "\n")


if __name__ == "__main__":
    main()
