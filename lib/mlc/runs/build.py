"""A method as the params define it: built new (random or pretrained), at its configured size with no file,
or loaded from a finished run."""
from __future__ import annotations

import contextlib

import torch

from mlc.config.params import MethodParams, RunParams
from mlc.core.registry import create_model, method_builder
from mlc.engine import stage
from mlc.modeling.losses import build_loss
from mlc.modeling.method import Method
from mlc.runs.data import prepare_data
from mlc.runs.resolve import method_params


def build_method(mp: MethodParams, num_classes: int, model: torch.nn.Module | None = None,
                 label_names: list[str] | None = None) -> Method:
    """Model (a new one unless given) and how it trains: the model's registered method, or by default
    a closed-set classifier whose outputs carry ``logits``, trained with the params' loss."""
    if model is None:
        model = create_model(mp.model_name, mp.model, num_classes, label_names=label_names)
    builder = method_builder(mp.model_name)
    if builder is not None:
        return builder(model, mp.loss)
    criterion = build_loss(mp.loss)
    return Method(model=model, loss_fn=lambda out, target: {"loss": criterion(out["logits"], target)})


# training labels of each real dataset (open vocabulary: the seen ones), for models built without data
DATASET_CLASSES = {"coco": 80, "voc": 20, "nuswide81": 81, "nuswide_zsl": 925, "openimages": 7186, "vg500": 500}


def untrained_method(mp: MethodParams, num_classes: int, on_meta: bool = False) -> Method:
    """The method at its configured size with random weights, reading no file: no pretrained backbone, CLIP
    or stage-1 checkpoint, word-sum label embeddings, random text embeddings for open-vocabulary label sets.
    For shapes, parameter counts and speed (benchmarks/), never for results.  ``on_meta``: on the meta device
    (closed-set models only; open_clip moves its models, which meta cannot)."""
    import dataclasses
    changes = {"pretrained": False} if hasattr(mp.model, "pretrained") else {}
    for key, value in (("clip_pretrained", None), ("image_checkpoint", None), ("label_embeddings", "words")):
        if hasattr(mp.model, key):
            changes[key] = value
    cfg = dataclasses.replace(mp.model, **changes)
    # a prompt-tuning model (MKT stage 2) needs label names to build its prompts
    names = [f"label {i}" for i in range(num_classes)] if getattr(cfg, "stage", None) == "prompt" else None
    with torch.device("meta") if on_meta else contextlib.nullcontext():
        model = create_model(mp.model_name, cfg, num_classes, label_names=names)
        table = getattr(model, "label_embeddings", None)
        if isinstance(table, torch.Tensor) and not on_meta and not table.any():     # no label names: random ones
            random = torch.nn.functional.normalize(torch.randn(table.shape), dim=-1)
            if hasattr(model, "set_label_embeddings"):
                model.set_label_embeddings(random)
            else:
                with torch.no_grad():
                    table.copy_(random)
    return build_method(dataclasses.replace(mp, model=cfg), num_classes, model=model)


def load_trained(params: RunParams, name: str, device: str = "cpu") -> torch.nn.Module:
    """The best model of a finished method run, in eval mode.  A failed, unfinished or emptied run is an
    error saying which, never a half-trained model."""
    mp = method_params(params, name)
    stage_dir = params.run_dir / name
    best = stage_dir / "checkpoints" / "best.pt"
    failed = stage.failure(stage_dir)
    if failed is not None:
        raise stage.StageNotFinishedError(
            f"{stage_dir}: this run failed ({failed.get('what', failed.get('reason'))}, see "
            f"{stage_dir / stage.FAILED}); it has no result to load")
    if not stage.is_finished(stage_dir):
        if best.is_file():
            raise stage.StageNotFinishedError(
                f"{stage_dir}: this run has not finished training (its best.pt is from an interrupted run); rerun "
                f"the training of {name!r} to resume it, then evaluate")
        raise FileNotFoundError(f"{best}: no trained checkpoint; run the training notebook for {name!r} first")
    if not best.is_file():
        raise FileNotFoundError(f"{best}: the run finished but its best checkpoint is gone, so there is nothing to "
                                f"load; delete {stage_dir} and train {name!r} again")
    manifest = prepare_data(params, progress=False)
    labels = manifest.label_subset(mp.label_subset)
    model = create_model(mp.model_name, mp.model, len(labels), label_names=[manifest.label_names[i] for i in labels])
    state = stage.load_checkpoint(best, map_location=device)[0]["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise RuntimeError(f"{best}: checkpoint does not fit model {mp.model_name!r} with "
                           f"{len(manifest.label_subset(mp.label_subset))} classes: {e}") from None
    return model.to(device).eval()
