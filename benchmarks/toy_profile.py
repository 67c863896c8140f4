"""Where the toy run's seconds go, per method: loading the training images (decode + per-sample augmentation in
the loader) against the training steps, and the per-epoch validation.

    python benchmarks/toy_profile.py [--params params/toy.yaml] [--methods q2l salgl] [--set KEY=VALUE ...]

For each method it trains one epoch in a scratch output folder (``history.jsonl`` gives the epoch's training
and validation seconds), and passes once over the training loader without a model (the data part of those
training seconds: with ``data.num_workers: 0`` the loader runs in the training process).  Prints one table and
writes it as JSON beside the run.  The numbers are for the machine it runs on; run it on a quiet one.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))


def data_pass_seconds(params, name: str) -> float:
    """One pass over the method's training loader as training builds it, no model."""
    from mlc.data.sampler import TrainSampler
    from mlc.engine.loop import make_loader
    from mlc.runs.data import method_data, speed_up_data
    from mlc.runs.resolve import method_params
    from mlc.runs.train import per_process_batch
    mp = method_params(params, name)
    data = method_data(params, name)
    speed_up_data(params, mp, data, progress=False)
    ds = data.datasets["train"]
    sampler = TrainSampler(len(ds), 0, 1)
    sampler.set_epoch(1)
    loader = make_loader(ds, per_process_batch(params, name, 1), shuffle=False,
                         num_workers=params.data.num_workers, drop_last=mp.train.drop_last, sampler=sampler)
    t0 = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params" / "toy.yaml"))
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--set", nargs="*", default=[], dest="set_args")
    ap.add_argument("--out", default=None, help="JSON file (default: benchmarks/results_toy_profile.json)")
    args = ap.parse_args(argv)
    from mlc.config.params import load_params
    from mlc.runs.data import prepare_data
    from mlc.runs.train import train_method
    with tempfile.TemporaryDirectory() as tmp:
        base = load_params(args.params, set_args=args.set_args)
        # the toy world and the toy CLIP are shared with the real run (their own caches); the trainings go to tmp
        prepare_data(base, progress=False)
        names = args.methods or [m for m in base.methods if m != "mkt_prompt"]
        rows = []
        for name in names:
            one = [*args.set_args, f"methods.{name}.train.epochs=1", f"name=profile_{name}"]
            params = load_params(args.params, set_args=one, output_root=tmp)
            params.data.root = str(base.dataset_root())          # reuse the generated world
            if params.clip is not None and base.clip is not None and not params.clip.pretrained:
                from mlc.runs.toy_clip import clip_checkpoint
                ck = clip_checkpoint(base)
                if ck.is_file():
                    params.clip.pretrained = str(ck)
            t0 = time.perf_counter()
            train_method(params, name, progress=False)
            total = time.perf_counter() - t0
            epoch = json.loads((params.run_dir / name / "history.jsonl").read_text().splitlines()[0])
            data_s = data_pass_seconds(params, name)
            rows.append({"method": name, "train_s": epoch["train_seconds"], "data_s": round(data_s, 2),
                         "steps_s": round(epoch["train_seconds"] - data_s, 2),
                         "validation_s": round(epoch["epoch_seconds"] - epoch["train_seconds"], 2),
                         "run_s": round(total, 1), "epochs_in_params": base.methods[name].train.epochs})
            print(json.dumps(rows[-1]), flush=True)
    import pandas as pd
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results_toy_profile.json"
    out.write_text(json.dumps({"params": args.params, "set": args.set_args, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
