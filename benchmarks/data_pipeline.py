"""Training images per second at paper resolution: the kit's data pipeline against the official one.

    PYTHONPATH=lib python benchmarks/data_pipeline.py            # 200 COCO-sized JPEGs, 448 px, batch 16

The images are 640 x 480 JPEGs in COCO's layout (benchmarks/rehearsal.py writes them), converted with
the kit's converter.  Every pipeline applies Q2L's training transform (resize to 448 x 448, ASL's
CutoutPIL, the ``randaugment`` package's policy) and yields normalised float batches of 16:

* ``official``: written the official way (a Dataset that opens the JPEG, torchvision Resize, CutoutPIL,
  ``randaugment.RandAugment``, ToTensor, Normalize; a new DataLoader each epoch);
* ``kit``: the kit's defaults (MultiLabelDataset, the kit's RandAugment, uint8 batches normalised once
  per batch, persistent workers, the sampler that seeds each image's augmentation);
* ``kit+cache``: the same reading the resized images from ``data.image_cache: uint8`` (built once
  beforehand; its build time is reported apart).

Each is timed over 2 epochs after a warm-up batch, with 0 and 2 loader workers, on the torch threads
given (default 2, as CI machines have).  The kit's uint8 batches are normalised either by this CPU in
the training process (counted: a CPU-only run) or not here at all ("GPU normalises": what a GPU run's
loader delivers, the normalisation then being one cheap kernel on the device).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "benchmarks"))

if not hasattr(np, "int"):          # the randaugment package (1.0.2) still uses np.int, removed in numpy 1.24
    np.int = int


class OfficialStyleDataset(torch.utils.data.Dataset):
    """What the official repos do: a list of (path, target), PIL open + convert, the transform, a float target."""

    def __init__(self, paths, targets, size: int):
        import torchvision.transforms as T
        from randaugment import RandAugment

        from mlc.data.transforms import IMAGENET_MEAN, IMAGENET_STD, CutoutPIL
        self.paths, self.targets = paths, targets
        self.transform = T.Compose([T.Resize((size, size)), CutoutPIL(0.5), RandAugment(), T.ToTensor(),
                                    T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image
        img = Image.open(self.paths[i]).convert("RGB")
        return self.transform(img), torch.from_numpy(self.targets[i])


def _time(make_epoch_iter, epochs: int, n_images: int, normalize=None) -> dict:
    """images/s over ``epochs`` full passes (the first batch of the first pass is a warm-up)."""
    it = iter(make_epoch_iter(0))
    next(it)
    t0 = time.perf_counter()
    seen = 0
    for batch in it:
        seen += _consume(batch, normalize)
    for epoch in range(1, epochs):
        for batch in make_epoch_iter(epoch):
            seen += _consume(batch, normalize)
    seconds = time.perf_counter() - t0
    return {"images": seen, "seconds": round(seconds, 2), "images_per_second": round(seen / seconds, 1)}


def _consume(batch, normalize) -> int:
    from mlc.data.transforms import normalize_batch
    images = batch["image"] if isinstance(batch, dict) else batch[0]
    if images.dtype == torch.uint8 and normalize is not None:
        images = normalize_batch(images, *normalize)
    return len(images)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", default="0,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from rehearsal import write_coco

    from mlc.config.params import InputParams
    from mlc.data.dataset import MultiLabelDataset
    from mlc.data.datasets import convert_dataset
    from mlc.data.image_cache import attach_cache
    from mlc.data.manifest import Manifest
    from mlc.data.sampler import TrainSampler
    from mlc.data.transforms import NORMALIZE, build_transform
    from mlc.engine.loop import make_loader

    work = Path(args.work or tempfile.mkdtemp(prefix="mlc-data-bench-"))
    if not (work / "manifest" / "meta.json").is_file():
        write_coco(work / "coco", args.images, 8)
        convert_dataset("coco", work / "coco", work / "manifest", keep_empty=True)
    manifest = Manifest(work / "manifest")
    inp = InputParams(image_size=args.size, normalize="imagenet", cutout_factor=0.5, randaugment="official")
    kit = MultiLabelDataset(manifest, "train", build_transform(inp, True, uint8=True))
    kit.device_normalize = NORMALIZE["imagenet"]
    paths = [str(kit.image_path(i)) for i in range(len(kit))]
    targets = kit.targets().astype(np.float32)
    official = OfficialStyleDataset(paths, targets, args.size)
    cached = MultiLabelDataset(manifest, "train", build_transform(inp, True, uint8=True))
    cached.device_normalize = NORMALIZE["imagenet"]
    t0 = time.perf_counter()
    attach_cache(cached, args.size, num_workers=max(int(w) for w in args.workers.split(",")), progress=False)
    cache_seconds = time.perf_counter() - t0

    rows = []
    for workers in (int(w) for w in args.workers.split(",")):
        def official_epoch(epoch, workers=workers):
            return torch.utils.data.DataLoader(official, batch_size=args.batch, shuffle=True, num_workers=workers,
                                               drop_last=True)
        results = {"official": _time(official_epoch, args.epochs, len(official))}
        for name, ds in (("kit", kit), ("kit+cache", cached)):
            sampler = TrainSampler(len(ds))
            loader = make_loader(ds, args.batch, shuffle=False, num_workers=workers, drop_last=True, sampler=sampler,
                                 persistent_workers=True)

            def kit_epoch(epoch, sampler=sampler, loader=loader):
                sampler.set_epoch(epoch)
                return loader
            # normalised by this CPU (a CPU-only run), or left to the GPU (the uint8 batch is what leaves the loader)
            results[name] = _time(kit_epoch, args.epochs, len(ds), NORMALIZE["imagenet"])
            results[f"{name} (GPU normalises)"] = _time(kit_epoch, args.epochs, len(ds), None)
        for name, r in results.items():
            rows.append({"pipeline": name, "workers": workers, **r,
                         "vs_official": round(r["images_per_second"] / results["official"]["images_per_second"], 2)})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{len(kit)} images of 640 x 480 -> {args.size} px, batch {args.batch}, {args.threads} torch threads; "
          f"cache built in {cache_seconds:.1f} s")
    print(f"{'pipeline':28} {'workers':>7} {'images/s':>9} {'vs official':>11}")
    for r in rows:
        print(f"{r['pipeline']:28} {r['workers']:7d} {r['images_per_second']:9.1f} {r['vs_official']:10.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"cache_build_seconds": round(cache_seconds, 1), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
