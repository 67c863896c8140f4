"""Label embeddings of a real vocabulary: prompts/s one label at a time (the kit before issue 24) against
prompts batched across labels (:func:`mlc.modeling.clip.encode_prompts` now), on OpenAI's ViT-B/16 text tower.

    PYTHONPATH=lib python benchmarks/label_embeddings.py                  # CPU, 2 threads
    PYTHONPATH=lib python benchmarks/label_embeddings.py --device cuda --qks-labels 1006

The text tower is built from open_clip's ``ViT-B-16-quickgelu`` architecture with random weights (no download):
the speed of a forward does not depend on the weights.  Two vocabularies of NUS-WIDE's size (1,006 labels):

* MKT: one template per label, all 1,006 labels (before: 1,006 forwards of one prompt);
* QKS: the official 85 templates per label (before: one forward of 85 prompts per label), on the first
  ``--qks-labels`` labels (a full 85,510 prompts takes the better part of an hour on 2 CPU cores either way);
  the full vocabulary's time is extrapolated from the measured prompts/s and marked so.

Both ways must give the same embeddings to 1e-5 (the largest difference is reported; tests/test_embeddings.py
asserts it).  Writes ``benchmarks/results_label_embeddings_<device>.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from mlc.methods.qks.prompts import qks_templates  # noqa: E402
from mlc.modeling.clip import encode_prompts  # noqa: E402
from mlc.runs.toy_backbone import cpu_kind  # noqa: E402

NUS_WIDE_LABELS = 1006
MKT_TEMPLATE = "There is a {} in the scene"


@torch.inference_mode()
def one_label_at_a_time(model, tokenizer, names: list[str], templates: list[str], normalize: bool) -> np.ndarray:
    """What ``encode_prompts`` did before: one text-tower forward per label, over its templates."""
    device = next(model.parameters()).device
    out = []
    for name in names:
        emb = model.encode_text(tokenizer([t.format(name) for t in templates]).to(device)).float().cpu()
        if normalize:
            emb = emb / emb.norm(dim=-1, keepdim=True)
        emb = emb.mean(0)
        out.append(emb / emb.norm() if normalize else emb)
    return torch.stack(out).numpy()


def label_names(n: int) -> list[str]:
    """``n`` distinct one- and two-word names (the length of a prompt does not change the work: every prompt
    is padded to CLIP's 77 tokens)."""
    words = ["sky", "clouds", "person", "water", "animal", "grass", "buildings", "window", "plants", "lake",
             "ocean", "road", "flowers", "sunset", "reflection", "rocks", "vehicle", "snow", "tree", "beach",
             "mountain", "street", "boats", "sun", "house", "birds", "car", "dog", "cat", "sand", "train", "bridge"]
    names = list(words) + [f"{a} {b}" for a in words for b in words if a != b]
    return names[:n]


def _time(fn) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def measure(model, tokenizer, name: str, names: list[str], templates: list[str], normalize: bool,
            batch_size: int, full_labels: int) -> dict:
    prompts = len(names) * len(templates)
    before, t_before = _time(lambda: one_label_at_a_time(model, tokenizer, names, templates, normalize))
    after, t_after = _time(lambda: encode_prompts(model, tokenizer, names, templates, normalize, normalize,
                                                  batch_size=batch_size))
    full = full_labels * len(templates)
    row = {"vocabulary": name, "labels": len(names), "templates": len(templates), "prompts": prompts,
           "batch_size": batch_size,
           "before_prompts_per_s": round(prompts / t_before, 1), "after_prompts_per_s": round(prompts / t_after, 1),
           "speedup": round(t_before / t_after, 2),
           "max_abs_difference": float(np.abs(before - after).max()),
           f"full_{full_labels}_labels_before_s": round(full / (prompts / t_before), 1),
           f"full_{full_labels}_labels_after_s": round(full / (prompts / t_after), 1),
           "full_vocabulary": "measured" if len(names) == full_labels else "extrapolated from prompts/s"}
    print(f"{name:4} {len(names):5} labels x {len(templates):2} templates: before {row['before_prompts_per_s']:8.1f} "
          f"prompts/s, after {row['after_prompts_per_s']:8.1f} ({row['speedup']:.2f}x); max |diff| "
          f"{row['max_abs_difference']:.1e}; {full_labels} labels: {row[f'full_{full_labels}_labels_before_s']:.0f} s "
          f"-> {row[f'full_{full_labels}_labels_after_s']:.0f} s ({row['full_vocabulary']})", flush=True)
    return row


def main(argv=None) -> None:
    import open_clip
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mkt-labels", type=int, default=NUS_WIDE_LABELS)
    ap.add_argument("--qks-labels", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-quickgelu").to(args.device).eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-16-quickgelu")
    rows = [measure(model, tokenizer, "mkt", label_names(args.mkt_labels), [MKT_TEMPLATE], False,
                    args.batch_size, NUS_WIDE_LABELS),
            measure(model, tokenizer, "qks", label_names(args.qks_labels), qks_templates(), False,
                    args.batch_size, NUS_WIDE_LABELS)]
    device = torch.device(args.device)
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_kind(args.threads),
            "torch": torch.__version__, "threads": args.threads,
            "model": "ViT-B-16-quickgelu text tower, random weights", "inference_mode": True}
    out = ROOT / "benchmarks" / f"results_label_embeddings_{device.type}.json"
    out.write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
