"""The notebooks' step-by-step view of one batch (mlc.notebook.walkthrough)."""
import torch
from conftest import ROOT

from mlc.methods.q2l.model import Q2LConfig, Query2Label
from mlc.notebook import walkthrough


def test_shapes_lists_each_part_in_call_order_with_its_code():
    model = Query2Label(Q2LConfig(hidden_dim=128, dim_feedforward=64), num_classes=5).train()
    table = walkthrough.shapes(model, torch.randn(2, 3, 64, 64))
    assert list(table["module"]) == ["backbone", "encoder.0", "decoder.0", "decoder.1", "decoder_norm", "head",
                                     "(model output)"]
    assert table.loc[table["module"] == "head", "output"].item() == "[2, 5] float32"
    assert "logits: [2, 5] float32" in table["output"].iloc[-1]
    path, line = table.loc[table["module"] == "head", "code"].item().split(":")
    assert (ROOT / path).read_text().splitlines()[int(line) - 1].startswith("class GroupWiseLinear")
    assert table.loc[table["module"] == "decoder_norm", "code"].item() == "torch.nn.modules.normalization.LayerNorm"
    assert model.training                                          # the model's mode is given back


def test_only_traces_the_named_parts():
    model = Query2Label(Q2LConfig(hidden_dim=128, dim_feedforward=64), num_classes=5)
    table = walkthrough.shapes(model, torch.randn(1, 3, 64, 64), only=["backbone", "decoder.1"])
    assert list(table["module"]) == ["backbone", "decoder.1", "(model output)"]
