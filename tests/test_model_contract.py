"""The output contract of every registered model (docs/models.md), tested over the registry as timm tests
``list_models()``: each model is built from its toy configuration in params/toy_ci.yaml."""
import dataclasses

import pytest
import torch
from conftest import ROOT

from mlc.config.params import load_params
from mlc.core.registry import create_model, list_models

PARAMS = load_params(ROOT / "params" / "toy_ci.yaml")
LABELS = [f"{c} {s}" for c in ("red", "green", "blue", "yellow", "purple", "orange")
          for s in ("circle", "square", "triangle", "star", "cross")]


def _build(method: str):
    mp = PARAMS.methods[method]
    cfg = mp.model
    # a randomly initialised CLIP stands in for the run's trained toy CLIP
    cfg = dataclasses.replace(cfg, **{k: None for k in ("clip_pretrained", "image_checkpoint") if hasattr(cfg, k)})
    names = LABELS[:22] if mp.label_subset == "seen" else LABELS
    torch.manual_seed(0)
    return create_model(mp.model_name, cfg, len(names), label_names=names).eval(), mp, names


def test_every_registered_model_has_a_toy_configuration():
    assert set(list_models()) == {mp.model_name for mp in PARAMS.methods.values()}


@pytest.mark.parametrize("method", sorted(PARAMS.methods))
def test_output_contract(method):
    model, mp, names = _build(method)
    size = mp.input.image_size
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    logits, attention = out["logits"], out["attention"]
    assert logits.shape == (2, len(names)) and torch.isfinite(logits).all()
    assert attention.ndim == 4 and attention.shape[:2] == (2, len(names)) and torch.isfinite(attention).all()
    grid = size // 8                                    # every toy backbone has stride 8
    assert attention.shape[2:] == (grid, grid)


@pytest.mark.parametrize("method", sorted(m for m, mp in PARAMS.methods.items() if mp.label_subset == "seen"))
def test_open_vocabulary_models_score_new_label_names(method):
    model, mp, _ = _build(method)
    model.set_label_names(["pink hexagon", "red circle", "a cat"])
    size = mp.input.image_size
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out["logits"].shape == (2, 3) and out["attention"].shape[:2] == (2, 3)
