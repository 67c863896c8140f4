"""Open Images converter at scale: a synthetic human-labels CSV of 5 million rows in the real format.

    python benchmarks/openimages_convert.py [--rows 5000000] [--images 1600000] [--workdir /tmp/oi_bench]

Writes the 2018_04 metadata (19,995 classes, 7,186 trainable, 2,594-MID unseen pool, top 400) and a
train CSV ``ImageID,Source,LabelName,Confidence`` with --rows rows over --images images (about 3.1
labels per image and 40 % negatives, like the real file), then converts it in a fresh process
(``check_images=False``: the labels only) and reports the conversion's wall time and the process's peak
resident memory.  Target: under 2 minutes and 4 GB on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def generate(root: Path, rows: int, images: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    meta = root / "2018_04"
    (meta / "train").mkdir(parents=True, exist_ok=True)
    (meta / "test").mkdir(exist_ok=True)
    mids = np.array([f"/m/{i:07x}" for i in range(19995)])
    pd.DataFrame({"mid": mids, "name": [f"class {i % 15000}" for i in range(19995)]}).to_csv(
        meta / "class-descriptions.csv", header=False, index=False)
    perm = rng.permutation(19995)
    (meta / "classes-trainable.txt").write_text("\n".join(mids[perm[:7186]]) + "\n")
    with open(meta / "unseen_labels.pkl", "wb") as f:
        pickle.dump(list(mids[perm[7186:7186 + 2594]]), f)
    (meta / "top_400_unseen.csv").write_text("\n".join(map(str, rng.choice(2594, 400, replace=False))) + "\n")
    image_ids = np.array([f"{v:016x}" for v in rng.integers(0, 2**63, images)])
    which = np.sort(rng.integers(0, images, rows))
    popularity = rng.zipf(1.3, rows) % 19995                     # a long tail, as the real labels have
    df = pd.DataFrame({"ImageID": image_ids[which],
                       "Source": np.where(rng.random(rows) < 0.8, "verification", "crowdsource-verification"),
                       "LabelName": mids[perm[popularity]],
                       "Confidence": (rng.random(rows) > 0.4).astype(np.int8)})
    df.to_csv(meta / "train" / "train-annotations-human-imagelabels.csv", index=False)
    df.head(50000).to_csv(meta / "test" / "test-annotations-human-imagelabels.csv", index=False)


def convert(root: Path, out: Path) -> dict:
    from mlc.data.datasets import convert_dataset
    t0 = time.perf_counter()
    m = convert_dataset("openimages", root, out, check_images=False)
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 1), "peak_rss_GB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                                                / 2**20, 2),
            "train_images": int(m.meta["splits"]["train"]), "labels": m.num_labels,
            "conflicts_dropped": m.meta["conflicting_images_dropped"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--images", type=int, default=1_600_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/oi_bench"))
    ap.add_argument("--convert-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    root, out = args.workdir / "raw", args.workdir / "manifest"
    if args.convert_only:
        print(json.dumps(convert(root, out)))
        return
    t0 = time.perf_counter()
    generate(root, args.rows, args.images)
    csv = root / "2018_04" / "train" / "train-annotations-human-imagelabels.csv"
    print(f"generated {args.rows:,} rows ({csv.stat().st_size / 2**20:.0f} MB) in {time.perf_counter() - t0:.0f} s")
    run = subprocess.run([sys.executable, __file__, "--workdir", str(args.workdir), "--convert-only"],
                         capture_output=True, text=True, check=True)
    print(run.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
