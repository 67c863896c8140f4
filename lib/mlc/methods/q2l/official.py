"""Query2Label's released files beside the weights: ``config_new.json``, checked against the params."""
from __future__ import annotations

import json
from pathlib import Path

# Q2L's --backbone names -> the kit's backbones
Q2L_BACKBONES = {"resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50", "resnet101": "resnet101",
                 "tresnetl": "tresnet_l", "tresnetl_v2": "tresnet_l_21k", "swin_L_384_22k": "swin_large_384",
                 "CvT_w24": "cvt_w24_384"}


def check_q2l_config(config_file: str | Path, mp, num_classes: int, params_source: str) -> None:
    """Q2L ships ``config_new.json`` (its training arguments) beside ``checkpoint.pkl``; the official
    inference script builds the model from it.  Every architecture field must agree with the params."""
    config_file = Path(config_file)
    try:
        official = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{config_file}: not a readable Q2L config_new.json ({e})") from None
    cfg = mp.model
    expected = {"backbone": (Q2L_BACKBONES.get(official.get("backbone"), official.get("backbone")), cfg.backbone,
                             "model.backbone"),
                "img_size": (official.get("img_size"), mp.input.image_size, "input.image_size"),
                "num_class": (official.get("num_class"), num_classes, "the number of labels"),
                "hidden_dim": (official.get("hidden_dim"), cfg.hidden_dim, "model.hidden_dim"),
                "dim_feedforward": (official.get("dim_feedforward"), cfg.dim_feedforward, "model.dim_feedforward"),
                "enc_layers": (official.get("enc_layers"), cfg.enc_layers, "model.enc_layers"),
                "dec_layers": (official.get("dec_layers"), cfg.dec_layers, "model.dec_layers"),
                "nheads": (official.get("nheads"), cfg.nheads, "model.nheads"),
                "keep_input_proj": (official.get("keep_input_proj", False), cfg.keep_input_proj,
                                    "model.keep_input_proj"),
                "keep_first_self_attn_dec": (official.get("keep_first_self_attn_dec", False),
                                             cfg.keep_first_self_attn, "model.keep_first_self_attn"),
                "keep_other_self_attn_dec": (official.get("keep_other_self_attn_dec", False),
                                             cfg.keep_other_self_attn, "model.keep_other_self_attn")}
    if official.get("pre_norm"):
        raise ValueError(f"{config_file}: pre_norm is true; the kit's Q2L is the post-norm model of every "
                         f"released checkpoint")
    wrong = [f"{key} is {theirs!r} in {config_file.name} but {where} is {mine!r} in {params_source}"
             for key, (theirs, mine, where) in expected.items() if theirs is not None and theirs != mine]
    if wrong:
        raise ValueError(f"{config_file}: the released model's architecture differs from the params:\n  "
                         + "\n  ".join(wrong))
