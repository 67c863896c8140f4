"""Peak memory and time of SALGL/SGRE's label attention at the COCO shape, on CPU.

    python benchmarks/label_attention_memory.py [--batch 8] [--chunk 10] [--repeats 3]

The attention (mlc.modeling.layers.LowRankBilinearAttention, att_dim 1024) runs on tokens [B, 196, 2048]
(ResNet-101 at 448 px) and 80 label embeddings of width 768, forward only (inference) and forward +
backward (training), in four forms: the official computation (W_h then w_t on the [B, C, N, 1024]
intermediate), fused score layers, and each chunked over labels.  Every form runs in a fresh process so
that its peak resident memory (ru_maxrss) is its own; the table reports the peak above the process's
resident memory just before the first call, and the median time over the repeats.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def run_one(fuse: bool, chunk: int | None, train: bool, batch: int, repeats: int) -> dict:
    import torch

    from mlc.modeling.layers import LowRankBilinearAttention
    torch.manual_seed(0)
    att = LowRankBilinearAttention(2048, 768, 1024, fuse_score=fuse, label_chunk=chunk)
    tokens = torch.randn(batch, 196, 2048, requires_grad=train)
    emb = torch.randn(80, 768)
    base = _rss_mb()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.set_grad_enabled(train):
            feats, alpha = att(tokens, emb)
            if train:
                (feats.square().mean() + alpha.mean()).backward()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"form": ("fused" if fuse else "official") + (f", chunks of {chunk} labels" if chunk else ""),
            "mode": "train" if train else "inference", "peak_extra_MB": round(peak - base),
            "seconds": round(sorted(times)[len(times) // 2], 2), "checksum": float(feats.detach().double().sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        fuse, chunk, train = json.loads(args.one)
        print(json.dumps(run_one(fuse, chunk, train, args.batch, args.repeats)))
        return
    import pandas as pd
    rows = []
    for train in (False, True):
        for fuse in (False, True):
            for chunk in (None, args.chunk):
                out = subprocess.run([sys.executable, __file__, "--batch", str(args.batch), "--repeats",
                                      str(args.repeats), "--one", json.dumps([fuse, chunk, train])],
                                     capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    print(f"\nlabel attention, B={args.batch}, C=80, N=196, D=2048, att_dim=1024, CPU")
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
