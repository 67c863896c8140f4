"""A rehearsal at real scale: the user's whole path on a synthetic dataset in COCO's on-disk layout.

    PYTHONPATH=lib python benchmarks/rehearsal.py                        # CPU: a few steps per method
    PYTHONPATH=lib python benchmarks/rehearsal.py --device cuda --n-train 256 --batch 32 --json out.json

1. writes ``coco/train2014/*.jpg``, ``coco/val2014/*.jpg`` (640 x 480 JPEGs) and
   ``coco/annotations/instances_{train,val}2014.json`` with COCO's 80 category ids;
2. for each method, a params file that ``extends`` its paper config (R101-448 for Q2L, SALGL and SGRE;
   CLIP ViT-B/16 for MKT and QKS) and changes only what a rehearsal must: the data paths, a stand-in for
   the ImageNet weights (no pretrained weights can be read here; see ``standin_resnet``), word-sum label
   embeddings instead of BERT, 2 epochs, the batch size, the device;
3. for MKT and QKS, a random-init ViT-B/16-QuickGELU saved as the run's CLIP file, and the label
   embeddings built from it (what notebooks 02 and 03 do with the OpenAI weights);
4. ``python -m mlc.train PARAMS --method M`` in a subprocess, exactly as a user runs it, which converts
   the dataset with the kit's converter on first use and trains.

Reported per method: seconds per optimizer step in the last epoch (the first pays for start-up and
cuDNN autotuning), peak memory (CUDA: allocated on the GPU; CPU: the process's maximum RSS) and the
test mAP, which on random data and weights only shows that the numbers are finite.

A steady-state run (``--epochs 3`` on a few thousand images, the loader as the paper config sets it) answers
whether the loader keeps the device busy: the last epoch's images/s, the share of it the training loop waited
for the loader (``data_wait_fraction``, every device) and, on CUDA, the share of the GPU's time between steps
with nothing queued (``gpu_idle_fraction``, from CUDA events; :func:`mlc.engine.loop.gpu_idle_fraction`).
Set the images/s beside ``train_step.py``'s synthetic-batch step at the same batch: a loader that keeps up
gives at least 90 % of it.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]     # COCO's 80 ids
CLOSED_SET = {"q2l": "params/q2l/coco_r101_448.yaml", "salgl": "params/salgl/coco_r101_448.yaml",
              "sgre": "params/sgre/coco_r101_448.yaml"}
OPEN_VOCAB = {"mkt": "params/mkt/nuswide_vitb16.yaml", "qks": "params/qks/nuswide_vitb16.yaml"}


def write_coco(root: Path, n_train: int, n_val: int, seed: int = 0) -> Path:
    """A COCO 2014 folder (images and instances JSON) with random scenes of coloured boxes, one category each."""
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(seed)
    cats = [{"id": c, "name": f"category {c}", "supercategory": "thing"} for c in COCO_IDS]
    ann_id = 0
    for split, n, first in (("train", n_train, 1), ("val", n_val, 500_001)):
        images, anns = [], []
        (root / f"{split}2014").mkdir(parents=True, exist_ok=True)
        for k in range(n):
            image_id = first + k
            name = f"COCO_{split}2014_{image_id:012d}.jpg"
            base = rng.integers(0, 255, size=(60, 80, 3), dtype=np.uint8)
            img = Image.fromarray(base).resize((640, 480), Image.BILINEAR)
            draw = ImageDraw.Draw(img)
            for _ in range(int(rng.integers(1, 5))):
                cat = int(rng.choice(COCO_IDS))
                x, y = int(rng.integers(0, 560)), int(rng.integers(0, 400))
                w, h = int(rng.integers(30, 80)), int(rng.integers(30, 80))
                draw.rectangle([x, y, x + w, y + h], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
                anns.append({"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                             "area": w * h, "iscrowd": 0})
                ann_id += 1
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=90)
            (root / f"{split}2014" / name).write_bytes(buf.getvalue())
            images.append({"id": image_id, "file_name": name, "width": 640, "height": 480})
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}2014.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def random_clip(path: Path, model_name: str = "ViT-B-16-quickgelu") -> Path:
    """Random weights of the paper's CLIP, saved where the params' ``clip.pretrained`` points."""
    import open_clip
    import torch
    if not path.is_file():
        torch.manual_seed(0)
        model = open_clip.create_model(model_name, pretrained=None)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return path


def standin_path(work: Path) -> Path:
    """Where the rehearsal keeps its stand-in ImageNet ResNet-101 file."""
    return work / "weights" / "resnet101-standin.pth"


def standin_resnet(path: Path, depth: int = 101) -> Path:
    """A stand-in for torchvision's ImageNet ResNet file: random weights whose BatchNorm statistics are measured.

    Q2L freezes its backbone's BatchNorm, so the layers use the file's running statistics from the first step.
    A random ResNet-101 carries mean 0 and variance 1 there, which normalise nothing: its layer4 activations
    reach 2e5 (past float16's 65504, and large enough in bfloat16 to blow the first update up), where the real
    ImageNet weights stay near 10. Measuring the statistics on a few batches of unit-variance images (the
    normalised input's scale) gives random weights the scale of trained ones; the file has torchvision's
    keys, so every ResNet backbone of the kit (frozen or trainable BatchNorm) loads it as it loads the real one.
    """
    import torch
    import torchvision
    if not path.is_file():
        torch.manual_seed(0)
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None                  # a plain average over the calibration batches
                m.reset_running_stats()
        net.train()
        with torch.no_grad():
            for _ in range(4):
                net(torch.randn(8, 3, 224, 224))
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), path)
    return path


def params_file(work: Path, method: str, paper: str, batch: int, device: str, workers: int,
                amp: str = "auto", epochs: int = 2) -> Path:
    """The paper config with only what a rehearsal must change (``amp``: "paper" keeps the paper's setting)."""
    model = {"pretrained": True, "backbone_weights": str(standin_path(work))} if method in CLOSED_SET else {}
    if method in ("salgl", "sgre"):
        model["label_embeddings"] = "words"          # BERT weights cannot be read here; same shape of table
    train = {"epochs": epochs, "batch_size": batch, "eval_batch_size": batch, "device": device, "log_every": 1,
             "early_stop_patience": None}
    if amp != "paper":
        train["amp"] = amp
    import yaml
    over = yaml.safe_load((ROOT / paper).read_text())
    if over.get("extends"):
        over["extends"] = str((ROOT / paper).parent / over["extends"])
    over["methods"] = {method: over["methods"][method]}      # e.g. mkt_prompt stays out of the rehearsal
    mp = over["methods"][method]
    mp.setdefault("model", {}).update(model)
    mp.setdefault("train", {}).update(train)
    over.update(name=f"rehearsal_{method}_{amp}", output_root=str(work / "outputs"))
    # the paper's dataset settings are replaced whole (NUS-WIDE's layout option means nothing to COCO)
    over["data"] = {"dataset": "manifest", "source": "coco", "raw_root": str(work / "coco"),
                    "manifest": str(work / "manifests" / method), "num_workers": workers,
                    "source_options": {"keep_empty": False}}
    # a few hundred images leave some of the 80 classes without a positive: their AP is skipped, not NaN
    over["eval"] = {**over.get("eval", {}), "empty_class": "skip"}
    if method in OPEN_VOCAB:
        over["clip"] = {"model": "ViT-B-16-quickgelu", "pretrained": str(work / "clip" / "ViT-B-16-random.pt")}
        over["text"] = {"encoders": ["clip_mkt" if method == "mkt" else "clip_qks"]}
        mp["label_subset"] = "all"                   # COCO has no seen / unseen split
    path = work / f"{method}_{amp}.yaml"
    path.write_text(yaml.safe_dump(over, sort_keys=False))
    return path


def run_method(work: Path, method: str, paper: str, batch: int, device: str, workers: int, threads: int,
               amp: str = "auto", epochs: int = 2) -> dict:
    pf = params_file(work, method, paper, batch, device, workers, amp, epochs)
    env = {**os.environ, "MLC_PROGRESS": "lines", "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(ROOT / "lib") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if method not in OPEN_VOCAB:
        standin_resnet(standin_path(work))
    else:
        random_clip(work / "clip" / "ViT-B-16-random.pt")
        prep = subprocess.run([sys.executable, "-c", "import sys; from mlc.config.params import load_params; "
                               "from mlc.modeling.embeddings import build_run_embeddings; "
                               "build_run_embeddings(load_params(sys.argv[1]), progress=False)", str(pf)],
                              capture_output=True, text=True, env=env, cwd=ROOT)
        if prep.returncode:
            return {"method": method, "amp": amp, "error": "label embeddings: " + prep.stderr[-1500:]}
    t0 = time.time()
    done = subprocess.run([sys.executable, "-m", "mlc.train", str(pf), "--method", method], capture_output=True,
                          text=True, env=env, cwd=ROOT)
    wall = time.time() - t0
    rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    if done.returncode:
        return {"method": method, "amp": amp, "error": (done.stdout[-1500:] + done.stderr[-2500:])}
    stage = work / "outputs" / f"rehearsal_{method}_{amp}" / method
    result = json.loads((stage / "result.json").read_text())
    history = result["history"]
    steps = next((int(line.split(";")[1].split()[0]) for line in (stage / "train.log").read_text().splitlines()
                  if "optimizer steps per epoch" in line), None)
    last = history[-1]
    row = {"method": method, "params": paper, "amp": amp, "batch": batch, "steps_per_epoch": steps,
           "epochs": len(history), "wall_seconds": round(wall, 1),
           "seconds_per_step": round(last["train_seconds"] / steps, 3) if steps else None,
           "last_epoch_images_per_second": round(batch * steps / last["train_seconds"], 1) if steps else None,
           "data_wait_fraction": last.get("data_wait_fraction"), "gpu_idle_fraction": last.get("gpu_idle_fraction"),
           "first_epoch_seconds_per_step": round(history[0]["train_seconds"] / steps, 3) if steps else None,
           "test_mAP": result["test"]["mAP"]}
    if "peak_memory_gb" in last:
        row["peak_gpu_memory_gb"] = last["peak_memory_gb"]
    else:
        row["max_rss_gb_any_child"] = round(rss_gb, 2)
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=None, help="folder for the data and runs (default: a temporary one)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", default="q2l,salgl,sgre,mkt,qks",
                    help="methods, each optionally with its autocast: q2l:fp16 (paper = the paper's setting)")
    ap.add_argument("--amp", default="auto", help="train.amp of every method without its own (default auto)")
    ap.add_argument("--n-train", type=int, default=16)
    ap.add_argument("--n-val", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2, help="3 or more for a steady-state run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import tempfile
    work = Path(args.work or tempfile.mkdtemp(prefix="mlc-rehearsal-"))
    t0 = time.time()
    if not (work / "coco" / "annotations" / "instances_val2014.json").is_file():
        write_coco(work / "coco", args.n_train, args.n_val)
    print(f"COCO layout: {args.n_train} + {args.n_val} JPEGs of 640 x 480 in {work / 'coco'} "
          f"({time.time() - t0:.1f} s)", flush=True)
    rows = []
    for entry in args.methods.split(","):
        method, _, amp = entry.partition(":")
        paper = {**CLOSED_SET, **OPEN_VOCAB}[method]
        row = run_method(work, method, paper, args.batch, args.device, args.workers, args.threads, amp or args.amp,
                         args.epochs)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"device": args.device, "work": str(work), "rows": rows}, indent=1))
    failed = [f"{r['method']} ({r['amp']})" for r in rows if "error" in r]
    if failed:
        sys.exit(f"rehearsal failed for {', '.join(failed)}")


if __name__ == "__main__":
    main()
