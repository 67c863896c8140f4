"""What the per-image augmentation seeds cost (issue 13: results independent of the loader workers).

    python benchmarks/augment_seeding.py [--params params/toy.yaml] [--method q2l] [--images 1500]

Times one item of the training dataset (decode, augment, tensor) asked for by index and by (index, epoch
seed), as the training sampler does, over the first N training images of the params' dataset, and the
seeding calls themselves: ``torch.manual_seed`` (which also seeds every accelerator) against
``torch.default_generator.manual_seed`` (what the dataset uses), and numpy's legacy state save/restore
(which the dataset skips).  Medians of 3 passes, 1 thread.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import timeit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params/toy.yaml")
    ap.add_argument("--method", default="q2l")
    ap.add_argument("--images", type=int, default=1500)
    args = ap.parse_args()
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from mlc.config.params import load_params
    from mlc.data.dataset import MultiLabelDataset
    from mlc.data.transforms import build_transform
    from mlc.runs.data import prepare_data
    params = load_params(args.params)
    manifest = prepare_data(params, progress=False)
    ds = MultiLabelDataset(manifest, "train", build_transform(params.methods[args.method].input, train=True))
    n = min(args.images, len(ds))

    def per_item(seed) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            for i in range(n):
                ds[i if seed is None else (i, seed)]
            times.append((time.perf_counter() - t0) / n)
        return statistics.median(times) * 1e6

    plain, seeded = per_item(None), per_item(12345)
    calls = {stmt: timeit.timeit(stmt, globals={"torch": torch, "np": np}, number=2000) / 2000 * 1e6 for stmt in
             ("torch.manual_seed(5)", "torch.default_generator.manual_seed(5)",
              "np.random.set_state(np.random.get_state())")}
    print(json.dumps({"images": n, "us_per_item_unseeded": round(plain), "us_per_item_seeded": round(seeded),
                      "us_overhead": round(seeded - plain), "us_per_call": {k: round(v, 1) for k, v in calls.items()}},
                     indent=1))


if __name__ == "__main__":
    main()
