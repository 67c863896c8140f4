import dataclasses

import pytest
import torch
from conftest import ROOT

from mlc.config.params import load_params
from mlc.methods.q2l.model import Q2LConfig, Query2Label, convert_official_state_dict
from mlc.modeling.layers import GroupWiseLinear, sine_position_encoding


def test_official_checkpoint_reproduces_official_outputs(oracles, speed):
    from regen import official_state_dict
    sd, rec = official_state_dict(oracles / "q2l-small")
    c = rec["config"]
    cfg = Q2LConfig(backbone=c["backbone"], hidden_dim=c["hidden_dim"], nheads=c["nheads"], enc_layers=c["enc_layers"],
                    dec_layers=c["dec_layers"], dim_feedforward=c["dim_feedforward"], dropout=c["dropout"])
    model = Query2Label(cfg, c["num_class"])
    model.load_state_dict(convert_official_state_dict(sd), strict=True)
    out = speed.forward(model, rec["input"])
    o = rec["outputs"]
    torch.testing.assert_close(out["logits"], o["logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["hs"], o["intermediate.hs"], atol=1e-4, rtol=1e-4)
    for i, att in enumerate(out["attentions"]):
        torch.testing.assert_close(att.flatten(2), o[f"intermediate.decoder_layer{i}_cross_attn_weights"],
                                   atol=1e-5, rtol=1e-4)
    h = w = c["img_size"] // 32
    pe = sine_position_encoding(h, w, c["hidden_dim"]).T.reshape(1, -1, h, w)
    torch.testing.assert_close(pe, rec["fixed"]["backbone.1.pe"])


@pytest.mark.slow
def test_official_outputs_under_torch_compile(oracles):
    """train.compile: the compiled forward (with channels_last) still gives the official outputs in fp32."""
    from conftest import SpeedSwitches
    test_official_checkpoint_reproduces_official_outputs(oracles, SpeedSwitches("compiled"))


def test_converter_handles_ddp_prefix_and_rejects_unknown_keys():
    sd = {"module.fc.W": torch.zeros(1, 3, 4), "module.fc.b": torch.zeros(1, 3)}
    out = convert_official_state_dict(sd)
    assert out["head.weight"].shape == (3, 4) and out["head.bias"].shape == (3,)
    with pytest.raises(KeyError, match="no kit equivalent"):
        convert_official_state_dict({"transformer.something": torch.zeros(1)})


def test_groupwise_linear_is_a_per_label_dot_product():
    head = GroupWiseLinear(5, 8)
    h = torch.randn(3, 5, 8)
    torch.testing.assert_close(head(h), torch.einsum("bkd,kd->bk", h, head.weight) + head.bias)


def test_forward_returns_attention_maps_on_the_grid():
    model = Query2Label(Q2LConfig(), 7).eval()
    out = model(torch.randn(2, 3, 64, 64))
    assert out["logits"].shape == (2, 7) and out["attention"].shape == (2, 7, 8, 8)
    torch.testing.assert_close(out["attention"].sum((-1, -2)), torch.ones(2, 7))


def test_paper_config_r101_448_has_193_8m_parameters():
    p = load_params(ROOT / "params/q2l/coco_r101_448.yaml")
    mp = p.methods["q2l"]
    with torch.device("meta"):  # shapes only: no weights needed, no memory used
        model = Query2Label(dataclasses.replace(mp.model, pretrained=False), 80)
    n = sum(t.numel() for t in model.parameters())
    assert round(n / 1e6, 1) == 193.8, n
    assert mp.input.image_size == 448 and mp.model.hidden_dim == 2048
