"""A run's data: the manifest (the toy world generated, a real dataset converted once), a method's label
columns and datasets, the checks before training, and the switches that speed it up without changing a number."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from mlc.config.params import MethodParams, RunParams, TrainParams
from mlc.core.io import exclusive
from mlc.data.dataset import MultiLabelDataset, check_images
from mlc.data.datasets import convert_dataset
from mlc.data.image_cache import attach_cache
from mlc.data.manifest import Manifest
from mlc.data.toyworld import generate
from mlc.data.transforms import NORMALIZE, build_transform, starts_with_resize
from mlc.runs.resolve import method_params


def prepare_data(params: RunParams, progress: bool = True, source: str | None = None, raw_root: str | None = None,
                 options: dict | None = None) -> Manifest:
    """The run's manifest: the toy world is generated (or reused) here; a real dataset is converted from
    its raw layout the first time (``data.source``, ``data.raw_root``, ``data.source_options``, or the
    arguments, which take precedence) and read afterwards.  A manifest converted with other settings is
    an error, never silently reused."""
    d = params.data
    if d.dataset == "toy" and source in (None, "toy"):
        root = params.dataset_root()
        if root.exists():                  # complete (it appears by one rename): read it, no lock to write
            return generate(root, d.toy, progress=progress)
        with exclusive(root.with_name(f".{root.name}.lock"), f"generating the toy world {root}"):
            return generate(root, d.toy, progress=progress)
    source, raw_root = source or d.source, raw_root or d.raw_root
    options = d.source_options if options is None else options
    out = params.resolve_path(d.manifest) if d.manifest else \
        params.resolve_path(params.output_root) / "datasets" / str(source)
    raw_root = str(params.resolve_path(raw_root)) if raw_root else raw_root
    if (out / "meta.json").is_file():              # converted: no lock needed (the folder may be read-only)
        return _read_or_convert(params, out, source, raw_root, options, progress)
    with exclusive(out.with_name(f".{out.name}.lock"), f"converting {source} into {out}"):
        return _read_or_convert(params, out, source, raw_root, options, progress)


def _read_or_convert(params: RunParams, out, source, raw_root, options, progress) -> Manifest:
    if (out / "meta.json").is_file():
        manifest = Manifest(out)
        done = manifest.meta.get("conversion")
        wanted = {"source": source, "raw_root": str(raw_root), "options": options}
        if source and done and (done["source"], done["options"]) != (wanted["source"], wanted["options"]):
            raise ValueError(f"{out} was converted from {done['source']!r} with options {done['options']}, not "
                             f"{source!r} with {options}: use another data.manifest directory or delete {out}")
        return manifest
    if not source:
        raise FileNotFoundError(f"{out / 'meta.json'}: no manifest there; set data.source and data.raw_root in "
                                f"{params.source or 'the params'} to convert the dataset, or run the data-preparation "
                                f"notebook with dataset=... and raw_root=...")
    if not raw_root:
        raise ValueError(f"{params.source}: data.raw_root is needed to convert {source!r} (where the raw dataset is)")
    if progress:
        print(f"converting {source} from {raw_root} into {out} ...")
    return convert_dataset(source, raw_root, out, **options)


@dataclass
class MethodData:
    manifest: Manifest
    labels: list[int]
    datasets: dict[str, MultiLabelDataset]

    @property
    def label_names(self) -> list[str]:
        """Display names of the method's labels, in column order."""
        return [self.manifest.label_names[i] for i in self.labels]


def method_data(params: RunParams, name: str, manifest: Manifest | None = None) -> MethodData:
    """The method's manifest, label columns and datasets (train, val, test; val = test with ``select_on: test``)."""
    mp = method_params(params, name)
    manifest = manifest or prepare_data(params)
    labels = manifest.label_subset(mp.label_subset)
    train_tf, eval_tf = build_transform(mp.input, train=True), build_transform(mp.input, train=False)
    splits = ["train", "val", "test"]
    if "val" not in manifest.split_names:
        if mp.train.select_on != "test":
            raise ValueError(f"{manifest.root}: the manifest has no 'val' split (splits: {manifest.split_names}); "
                             f"set methods.{name}.train.select_on: test in {params.source} (what the official "
                             f"code does) or convert the dataset with a validation split")
        splits.remove("val")
    datasets = {split: MultiLabelDataset(manifest, split, train_tf if split == "train" else eval_tf, labels)
                for split in splits}
    if "val" not in datasets:            # select_on: test -- the official protocol validates on the test split
        datasets["val"] = datasets["test"]
    return MethodData(manifest, list(labels), datasets)


def check_method_data(data: MethodData, tp: TrainParams, check_files: bool = True, progress: bool = True) -> None:
    """Before any training: every split has images, the training split fills a batch, (unless ``check_files``
    is off) every listed image file exists inside the image root, and a warning names evaluation images that
    are also training images (their scores would flatter the model)."""
    for split, ds in data.datasets.items():
        if len(ds) == 0:
            raise ValueError(f"{ds.parquet_path}: the {split!r} split is empty "
                             f"(0 images); nothing to {'train on' if split == 'train' else 'evaluate'}")
    n_train = len(data.datasets["train"])
    if tp.drop_last and n_train < tp.batch_size:
        raise ValueError(f"{data.datasets['train'].parquet_path}: the train split has {n_train} images, fewer than "
                         f"one batch (train.batch_size {tp.batch_size}) with train.drop_last: lower the batch size")
    train_images = set(data.manifest.split("train")["image"])
    for split in dict.fromkeys(s for s in ("val", "test") if s in data.manifest.split_names):
        images = data.manifest.split(split)["image"]
        shared = images[images.isin(train_images)]
        if len(shared):
            warnings.warn(f"{data.manifest.root / (split + '.parquet')}: {len(shared)} of the {len(images)} {split} "
                          f"images are also training images (first: {shared.iloc[0]!r}); their scores measure "
                          f"memory, not recognition", stacklevel=2)
    if check_files:
        for ds in {id(d): d for d in data.datasets.values()}.values():
            check_images(ds, progress=progress)


def speed_up_data(params: RunParams, mp: MethodParams, data: MethodData, progress: bool = True) -> None:
    """The data switches that change no number: uint8 batches normalised on the device
    (``data.uint8_batches``) and the resized-image cache (``data.image_cache: uint8``).  Both need the
    kit's own transforms, which begin with the deterministic resize (not ``input.timm_augment``)."""
    inp, d = mp.input, params.data
    if not starts_with_resize(inp):
        return
    datasets = {id(ds): (split, ds) for split, ds in data.datasets.items()}.values()
    if d.uint8_batches:
        for split, ds in datasets:
            ds.transform = build_transform(inp, train=split == "train", uint8=True)
            ds.device_normalize = NORMALIZE[inp.normalize]
    if d.image_cache == "uint8":
        for _, ds in datasets:
            attach_cache(ds, inp.image_size, d.num_workers, progress)
