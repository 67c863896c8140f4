"""Every released params file (params/released/*.yaml) loads its release as the authors ship it, through the
params file unchanged: ``mlc.load(<params>, checkpoint=PATH)`` with the file at a user's own path, and
``mlc.load(<params>)`` with the file at the params' own paths.

Each release is written here in its authors' container (tests/test_released.py checks the official *outputs* on
small records; this file checks the *paper-size files*):

* the official key layout, written out from the official code (and checked against the oracle records'
  ``keys.json`` where a record exists), at the shapes of the params' architecture (paper size: the params are
  not changed, so neither is the width);
* the authors' nesting: Q2L ``checkpoint.pkl`` = {'epoch', 'arch', 'state_dict' (DDP, ``module.``), 'best_mAP'
  (a numpy float), 'optimizer'} beside ``config_new.json``; SALGL ``ema_best_model.pth`` / SGRE
  ``best_ema_model.pth`` = the ModelEma state dict (``module.``) in ``experiments/<model>/expN/checkpoints/``
  beside ``expN/config.yaml``; MKT stage 1 the bare CLIPVIT state dict, stage 2 the PromptLearner's DDP state
  dict; QKS ``best_model.pth`` = the DDP model's whole state dict beside ``config.yaml``;
* tensors saved as the authors saved them: on ``cuda:0``, pickled as torch 1.x pickles CUDA storages
  (``torch.cuda.FloatStorage``).

Paper-size weights cost nothing to write: every tensor is one number expanded to its shape (a 1-element storage),
a different number per key, so the test can tell that every weight of the file lands in the model.  Building the
models skips their random initialisation (:func:`cheap_init`): the strict load replaces every weight anyway.
The relative paths of the params (``released/...``, ``outputs/datasets/...``) resolve against the checkout
that holds them: each test copies the params files, unchanged, into a checkout of its own under tmp_path.
"""
import json
import math
import re
import shutil
import zipfile
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT
from PIL import Image

import mlc
from mlc.config.params import load_params
from mlc.data.manifest import Label, write_manifest
from mlc.runs.resolve import method_params

RELEASED = sorted((ROOT / "params" / "released").glob("*.yaml"))


# ------------------------------------------------------------------------------------------------------------
# Official key layouts (name -> shape, in the official state-dict order), from the official code
# ------------------------------------------------------------------------------------------------------------
def _norm(keys, name, c, buffers=True, counter=True):
    keys[f"{name}.weight"], keys[f"{name}.bias"] = (c,), (c,)
    if buffers:
        keys[f"{name}.running_mean"], keys[f"{name}.running_var"] = (c,), (c,)
        if counter:
            keys[f"{name}.num_batches_tracked"] = ()


def resnet_keys(blocks=(3, 4, 23, 3), bottleneck=True, frozen_bn=False) -> dict:
    """torchvision's ResNet without avgpool / fc (SALGL's and SGRE's copies, Q2L's IntermediateLayerGetter);
    Q2L's FrozenBatchNorm2d has no num_batches_tracked."""
    keys = {"conv1.weight": (64, 3, 7, 7)}
    _norm(keys, "bn1", 64, counter=not frozen_bn)
    inplanes, exp = 64, 4 if bottleneck else 1
    for li, (n, planes) in enumerate(zip(blocks, (64, 128, 256, 512)), 1):
        for j in range(n):
            b = f"layer{li}.{j}"
            convs = ([(planes, inplanes, 1), (planes, planes, 3), (planes * 4, planes, 1)] if bottleneck else
                     [(planes, inplanes, 3), (planes, planes, 3)])
            for k, (o, i, s) in enumerate(convs, 1):
                keys[f"{b}.conv{k}.weight"] = (o, i, s, s)
                _norm(keys, f"{b}.bn{k}", o, counter=not frozen_bn)
            if j == 0 and (li > 1 or inplanes != planes * exp):
                keys[f"{b}.downsample.0.weight"] = (planes * exp, inplanes, 1, 1)
                _norm(keys, f"{b}.downsample.1", planes * exp, counter=not frozen_bn)
            inplanes = planes * exp
    return keys


def asl_tresnet_keys(layers, width_factor, bottleneck_first_two=False) -> dict:
    """ASL's TResNet (SGRE models/tresnet/tresnet.py; Q2L lib/models/tresnet/ and, with Bottleneck blocks in the
    first two stages, lib/models/tresnet2/ = TResNet-L-V2): conv2d_ABN = [Conv2d, InPlaceABN] (four tensors,
    no counter); a stride-2 conv is [conv2d_ABN, anti-alias (no tensors)]; the downsample is [AvgPool2d if
    stride 2, conv2d_ABN]; SE = 1x1 convs fc1 / fc2 with bias; no SE in layer4; no head."""
    keys, planes = {}, int(64 * width_factor)
    inplanes = planes

    def conv_abn(prefix, o, i, k):
        keys[f"{prefix}.0.weight"] = (o, i, k, k)
        _norm(keys, f"{prefix}.1", o, counter=False)

    conv_abn("body.conv1", planes, 48, 3)
    kinds = ["bottleneck" if bottleneck_first_two else "basic"] * 2 + ["bottleneck"] * 2
    for li, (n, mult, stride, kind) in enumerate(zip(layers, (1, 2, 4, 8), (1, 2, 2, 2), kinds), 1):
        p, exp = planes * mult, 4 if kind == "bottleneck" else 1
        for j in range(n):
            b, s = f"body.layer{li}.{j}", stride if j == 0 else 1
            if kind == "basic":
                conv_abn(f"{b}.conv1" if s == 1 else f"{b}.conv1.0", p, inplanes, 3)
                conv_abn(f"{b}.conv2", p, p, 3)
                se_c, r = p, max(p // 4, 64)
            else:
                conv_abn(f"{b}.conv1", p, inplanes, 1)
                conv_abn(f"{b}.conv2" if s == 1 else f"{b}.conv2.0", p, p, 3)
                conv_abn(f"{b}.conv3", p * 4, p, 1)
                se_c, r = p, max(p * 4 // 8, 64)
            if li < 4:
                keys[f"{b}.se.fc1.weight"], keys[f"{b}.se.fc1.bias"] = (r, se_c, 1, 1), (r,)
                keys[f"{b}.se.fc2.weight"], keys[f"{b}.se.fc2.bias"] = (se_c, r, 1, 1), (se_c,)
            if j == 0 and (s != 1 or inplanes != p * exp):
                conv_abn(f"{b}.downsample.{1 if s == 2 else 0}", p * exp, inplanes, 1)
            inplanes = p * exp
    return keys


def vit_keys(dim=1024, depth=24, patch=16, image=224, head=None) -> dict:
    """The timm-0.4 VisionTransformer SALGL and SGRE vendor (qkv bias, no pre-logits); SGRE's keeps its
    1000-class ``head``, SALGL's sets it to None."""
    keys = {"cls_token": (1, 1, dim), "pos_embed": (1, (image // patch) ** 2 + 1, dim),
            "patch_embed.proj.weight": (dim, 3, patch, patch), "patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        b = f"blocks.{i}."
        _norm(keys, b + "norm1", dim, buffers=False)
        keys[b + "attn.qkv.weight"], keys[b + "attn.qkv.bias"] = (3 * dim, dim), (3 * dim,)
        keys[b + "attn.proj.weight"], keys[b + "attn.proj.bias"] = (dim, dim), (dim,)
        _norm(keys, b + "norm2", dim, buffers=False)
        keys[b + "mlp.fc1.weight"], keys[b + "mlp.fc1.bias"] = (4 * dim, dim), (4 * dim,)
        keys[b + "mlp.fc2.weight"], keys[b + "mlp.fc2.bias"] = (dim, 4 * dim), (dim,)
    _norm(keys, "norm", dim, buffers=False)
    if head:
        keys["head.weight"], keys["head.bias"] = (head, dim), (head,)
    return keys


def ms_swin_keys(**kw) -> dict:
    from test_q2l_backbones import ms_swin_keys as keys
    return keys(**kw)


def cvt_w24_keys() -> dict:
    from test_q2l_backbones import SPEC, official_keys

    from mlc.modeling.backbones import CVT_W24
    return official_keys({**SPEC, **{k: v for k, v in CVT_W24.items() if k in SPEC}})


def _resblocks(keys, prefix, width, layers):
    for i in range(layers):
        b = f"{prefix}.{i}."
        keys[b + "attn.in_proj_weight"], keys[b + "attn.in_proj_bias"] = (3 * width, width), (3 * width,)
        keys[b + "attn.out_proj.weight"], keys[b + "attn.out_proj.bias"] = (width, width), (width,)
        _norm(keys, b + "ln_1", width, buffers=False)
        keys[b + "mlp.c_fc.weight"], keys[b + "mlp.c_fc.bias"] = (4 * width, width), (4 * width,)
        keys[b + "mlp.c_proj.weight"], keys[b + "mlp.c_proj.bias"] = (width, 4 * width), (width,)
        _norm(keys, b + "ln_2", width, buffers=False)


# OpenAI CLIP ViT-B/16 (what MKT and QKS load; tests/test_paper_architectures.py checks the params build it)
VIT_B16 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
               context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)


def clip_keys(c=VIT_B16, visual_proj=True) -> dict:
    """OpenAI CLIP's state dict (ViT image tower): root text parameters, ``visual.*``, the text transformer."""
    w, v, grid = c["transformer_width"], c["vision_width"], c["image_resolution"] // c["vision_patch_size"]
    keys = {"positional_embedding": (c["context_length"], w), "text_projection": (w, c["embed_dim"]),
            "logit_scale": (), "visual.class_embedding": (v,), "visual.positional_embedding": (grid ** 2 + 1, v)}
    if visual_proj:
        keys["visual.proj"] = (v, c["embed_dim"])
    keys["visual.conv1.weight"] = (v, 3, c["vision_patch_size"], c["vision_patch_size"])
    _norm(keys, "visual.ln_pre", v, buffers=False)
    _resblocks(keys, "visual.transformer.resblocks", v, c["vision_layers"])
    _norm(keys, "visual.ln_post", v, buffers=False)
    _resblocks(keys, "transformer.resblocks", w, c["transformer_layers"])
    keys["token_embedding.weight"] = (c["vocab_size"], w)
    _norm(keys, "ln_final", w, buffers=False)
    return keys


def mkt_stage1_keys(c=VIT_B16) -> dict:
    """MKT's CLIPVIT (models/clip_vit.py): CLIP's visual modules at the root, ``visual.proj`` as
    ``projection_dist``, and the never-used ``projection`` MLP (768 -> 512 -> 512, fixed sizes)."""
    v, grid = c["vision_width"], c["image_resolution"] // c["vision_patch_size"]
    keys = {"class_embedding": (v,), "positional_embedding": (grid ** 2 + 1, v),
            "projection_dist": (v, c["embed_dim"]), "conv1.weight": (v, 3, c["vision_patch_size"],
                                                                     c["vision_patch_size"])}
    _norm(keys, "ln_pre", v, buffers=False)
    _resblocks(keys, "transformer.resblocks", v, c["vision_layers"])
    _norm(keys, "ln_post", v, buffers=False)
    keys["projection.fc1.weight"], keys["projection.fc1.bias"] = (512, 768), (512,)
    keys["projection.fc2.weight"], keys["projection.fc2.bias"] = (512, 512), (512,)
    return keys


def mkt_stage2_keys(c=VIT_B16) -> dict:
    """MKT's PromptLearner (models/prompt_model.py): CLIP's text model, whose token table stage 2 tunes."""
    w = c["transformer_width"]
    keys = {"positional_embedding": (c["context_length"], w), "text_projection": (w, c["embed_dim"]),
            "token_embedding.weight": (c["vocab_size"], w)}
    _resblocks(keys, "transformer.resblocks", w, c["transformer_layers"])
    _norm(keys, "ln_final", w, buffers=False)
    return keys


def qks_keys(num_layers, num_queries, c=VIT_B16) -> dict:
    """QKS (models/qks.py): ``proj`` (CLIP's visual.proj moved out), ``query_tokens``, the whole CLIP without
    ``visual.proj``, and BLIP-2's Q-Former BERT (cross-attention in every layer, no pooler)."""
    d = 768
    keys = {"proj": (c["vision_width"], c["embed_dim"]), "query_tokens": (1, num_queries, d)}
    keys.update({f"clip_model.{k}": s for k, s in clip_keys(c, visual_proj=False).items()})
    keys.update({"net.embeddings.position_ids": (1, 512), "net.embeddings.word_embeddings.weight": (30522, d),
                 "net.embeddings.position_embeddings.weight": (512, d)})
    _norm(keys, "net.embeddings.LayerNorm", d, buffers=False)
    for i in range(num_layers):
        b = f"net.encoder.layer.{i}."
        for att in ("attention", "crossattention"):
            for n in ("query", "key", "value"):
                keys[f"{b}{att}.self.{n}.weight"], keys[f"{b}{att}.self.{n}.bias"] = (d, d), (d,)
            keys[f"{b}{att}.output.dense.weight"], keys[f"{b}{att}.output.dense.bias"] = (d, d), (d,)
            _norm(keys, f"{b}{att}.output.LayerNorm", d, buffers=False)
        for part in ("", "_query"):
            keys[f"{b}intermediate{part}.dense.weight"] = (4 * d, d)
            keys[f"{b}intermediate{part}.dense.bias"] = (4 * d,)
            keys[f"{b}output{part}.dense.weight"], keys[f"{b}output{part}.dense.bias"] = (d, 4 * d), (d,)
            _norm(keys, f"{b}output{part}.LayerNorm", d, buffers=False)
    return keys


def _mha(keys, prefix, d):
    keys[f"{prefix}.in_proj_weight"], keys[f"{prefix}.in_proj_bias"] = (3 * d, d), (3 * d,)
    keys[f"{prefix}.out_proj.weight"], keys[f"{prefix}.out_proj.bias"] = (d, d), (d,)


def _encoder_layers(keys, prefix, d, ffn, n):
    for i in range(n):
        b = f"{prefix}.{i}."
        _mha(keys, b + "self_attn", d)
        keys[b + "linear1.weight"], keys[b + "linear1.bias"] = (ffn, d), (ffn,)
        keys[b + "linear2.weight"], keys[b + "linear2.bias"] = (d, ffn), (d,)
        _norm(keys, b + "norm1", d, buffers=False)
        _norm(keys, b + "norm2", d, buffers=False)


def q2l_keys(backbone: dict, channels, grid, d, ffn, enc, dec, classes, keep_input_proj=False,
             keep_first_self_attn=False, keep_other_self_attn=False) -> dict:
    """Query2Label (lib/models/query2label.py): Joiner(backbone, position encoding) as ``backbone.0`` /
    ``backbone.1.pe``, the post-norm transformer without an encoder norm and with the decoder's self-attention
    removed unless kept, ``query_embed``, the group-wise head ``fc.W`` / ``fc.b``; input_proj an Identity
    unless kept."""
    keys = {**backbone, "backbone.1.pe": (1, d, grid, grid)}
    _encoder_layers(keys, "transformer.encoder.layers", d, ffn, enc)
    for i in range(dec):
        b = f"transformer.decoder.layers.{i}."
        if (keep_first_self_attn if i == 0 else keep_other_self_attn):
            _mha(keys, b + "self_attn", d)
        _mha(keys, b + "multihead_attn", d)
        keys[b + "linear1.weight"], keys[b + "linear1.bias"] = (ffn, d), (ffn,)
        keys[b + "linear2.weight"], keys[b + "linear2.bias"] = (d, ffn), (d,)
        if (keep_first_self_attn if i == 0 else keep_other_self_attn):
            _norm(keys, b + "norm1", d, buffers=False)
        _norm(keys, b + "norm2", d, buffers=False)
        _norm(keys, b + "norm3", d, buffers=False)
    _norm(keys, "transformer.decoder.norm", d, buffers=False)
    if keep_input_proj:
        keys["input_proj.weight"], keys["input_proj.bias"] = (d, channels, 1, 1), (d,)
    keys["query_embed.weight"] = (classes, d)
    keys["fc.W"], keys["fc.b"] = (1, classes, d), (1, classes)
    return keys


def _attention_keys(keys, d, e, att):
    keys["attention.linear1.weight"], keys["attention.linear2.weight"] = (att, d), (att, e)
    keys["attention.hidden_linear.weight"], keys["attention.hidden_linear.bias"] = (att, att), (att,)
    keys["attention.target_linear.weight"], keys["attention.target_linear.bias"] = (1, att), (1,)


def salgl_keys(backbone: dict, d, classes, scenes, embed_dim=768, ffn=2048, att=1024, num_steps=3,
               outmess=False) -> dict:
    """SALGL (models/salgl.py): the buffers ``embeddings`` (the label-embedding table of --embed-type) and
    ``comatrix`` first, then backbone, ``tb`` (one encoder layer), scene_linear, ggnn, attention, fc, classifier."""
    keys = {"embeddings": (classes, embed_dim), "comatrix": (scenes, classes, classes), **backbone}
    _encoder_layers(keys, "tb.layers", d, ffn, 1)
    keys["scene_linear.weight"] = (scenes, d)
    for i in (1, 2, 3):
        keys[f"ggnn.fc{i}_w.weight"], keys[f"ggnn.fc{i}_w.bias"] = (d, 2 * d if outmess else d), (d,)
        keys[f"ggnn.fc{i}_u.weight"], keys[f"ggnn.fc{i}_u.bias"] = (d, d), (d,)
    _attention_keys(keys, d, embed_dim, att)
    keys["fc.0.weight"], keys["fc.0.bias"] = (d, 2 * d if num_steps > 0 else d), (d,)
    keys["classifier.weight"], keys["classifier.bias"] = (classes, d), (classes,)
    return keys


def sgre_keys(backbone: dict, d, classes, grid, enc_layers=1, ffn=2048, att=1024, embed_dim=768) -> dict:
    """SGRE (models/mlic.py): backbone, ``position_embedding.pe`` (always built), encoder, attention, fc, fc2,
    net1-4 (Conv1d + BatchNorm1d); the label embeddings are a plain tensor, not in the state dict."""
    keys = {**backbone, "position_embedding.pe": (1, d, grid, grid)}
    _encoder_layers(keys, "encoder.layers", d, ffn, enc_layers)
    _attention_keys(keys, d, embed_dim, att)
    keys["fc.weight"], keys["fc.bias"] = (classes, d), (classes,)
    keys["fc2.0.weight"], keys["fc2.0.bias"] = (2 * d, 2 * d), (2 * d,)
    keys["fc2.3.weight"], keys["fc2.3.bias"] = (classes, 2 * d), (classes,)
    for i in (1, 2, 3, 4):
        keys[f"net{i}.0.weight"] = (d, d, 1)
        _norm(keys, f"net{i}.1", d)
    return keys


# the official backbone of each kit backbone name: (keys, width, stride)
def _backbone(name: str, method: str) -> tuple[dict, int, int]:
    if name in ("resnet101", "resnet101_bn"):
        return resnet_keys(frozen_bn=name == "resnet101"), 2048, 32
    if name == "tresnet_l":
        return asl_tresnet_keys((4, 5, 18, 3), 1.2), 2432, 32
    if name == "tresnet_l_21k":
        return asl_tresnet_keys((3, 4, 23, 3), 1.0, bottleneck_first_two=True), 2048, 32
    if name == "swin_large_384":
        return ms_swin_keys(), 1536, 32
    if name == "cvt_w24_384":
        return cvt_w24_keys(), 1024, 16
    if name == "vit_large_224":
        return vit_keys(head=1000 if method == "sgre" else None), 1024, 16
    raise KeyError(f"no official layout written down for backbone {name!r}: add it to tests/test_released_files.py")


# ------------------------------------------------------------------------------------------------------------
# Writing a file as the authors did
# ------------------------------------------------------------------------------------------------------------
_ON_CUDA = {"on": False}


def _cuda_tag(storage):
    return "cuda:0" if _ON_CUDA["on"] else None


torch.serialization.register_package(1, _cuda_tag, lambda storage, location: None)


def save_as_authors(obj, path: Path) -> Path:
    """``torch.save`` of tensors that live on ``cuda:0``, pickled as torch 1.x pickles CUDA storages
    (``torch.cuda.FloatStorage``): what every authors' training script wrote."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".plain")
    _ON_CUDA["on"] = True
    try:
        torch.save(obj, tmp)
    finally:
        _ON_CUDA["on"] = False
    with zipfile.ZipFile(tmp) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                data = re.sub(rb"ctorch\n(\w+Storage)\n", rb"ctorch.cuda\n\1\n", data)
            out.writestr(info, data)
    tmp.unlink()
    return path


def official_tensors(keys: dict, fixed: dict | None = None, first: int = 0) -> OrderedDict:
    """One number per key, expanded to the key's shape (a 1-element storage: paper size costs nothing).  The
    numbers are distinct (mantissa 1 + i/4096, i from ``first``: files loaded together use disjoint ranges) and
    scaled by 2^-log2(fan-in) for weights of rank >= 2, so that a forward pass stays finite; integers are zeros."""
    assert first + len(keys) < 4096
    out = OrderedDict()
    for i, (name, shape) in enumerate(keys.items(), first):
        if fixed and name in fixed:
            out[name] = fixed[name]
        elif name.endswith("num_batches_tracked"):
            out[name] = torch.zeros((), dtype=torch.long)
        else:
            scale = 2.0 ** -round(math.log2(math.prod(shape[1:]))) if len(shape) >= 2 else 1.0
            out[name] = torch.full((), (1 + i / 4096) * scale).expand(shape)
    out._metadata = OrderedDict({"": {"version": 1}})          # as nn.Module.state_dict() returns it
    return out


def _prefixed(state: dict, prefix: str) -> OrderedDict:
    out = OrderedDict((prefix + k, v) for k, v in state.items())
    out._metadata = OrderedDict({"": {"version": 1}})
    return out


def _optimizer_state(state: dict) -> dict:
    """AdamW's state_dict (torch 1.9): per float parameter step / exp_avg / exp_avg_sq, one param group."""
    params = [k for k, v in state.items() if v.is_floating_point()]
    return {"state": {i: {"step": 4000, "exp_avg": torch.zeros(()).expand(state[k].shape),
                          "exp_avg_sq": torch.zeros(()).expand(state[k].shape)} for i, k in enumerate(params)},
            "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2,
                              "amsgrad": False, "params": list(range(len(params)))}]}


def _config_yaml(path: Path, cfg: dict) -> None:
    """The lab's ``expN/config.yaml``: every argument as a naive ``key: value`` line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}: {v}\n" for k, v in cfg.items()))


# Q2L's --backbone names of the kit's backbones (config_new.json)
Q2L_NAMES = {"resnet101": "resnet101", "tresnet_l": "tresnetl", "tresnet_l_21k": "tresnetl_v2",
             "swin_large_384": "swin_L_384_22k", "cvt_w24_384": "CvT_w24"}


def write_q2l(params, mp, classes: int, checkpoint: Path) -> dict:
    """``<model zoo folder>/checkpoint.pkl`` + ``config_new.json`` (the training arguments)."""
    cfg, size = mp.model, mp.input.image_size
    body, width, stride = _backbone(cfg.backbone, "q2l")
    prefix = "backbone.0.body." if cfg.backbone.startswith(("resnet", "tresnet")) else "backbone.0."
    keys = q2l_keys({prefix + k: s for k, s in body.items()}, width, size // stride, cfg.hidden_dim,
                    cfg.dim_feedforward, cfg.enc_layers, cfg.dec_layers, classes, cfg.keep_input_proj,
                    cfg.keep_first_self_attn, cfg.keep_other_self_attn)
    state = official_tensors(keys)
    save_as_authors({"epoch": 42, "arch": params.released.model_name, "state_dict": _prefixed(state, "module."),
                     "best_mAP": np.float64(0.849), "optimizer": _optimizer_state(state)}, checkpoint)
    config = {"dataname": "coco14", "dataset_dir": "/path/to/COCO14/", "img_size": size, "output": "log",
              "num_class": classes, "pretrained": True, "backbone": Q2L_NAMES[cfg.backbone],
              "enc_layers": cfg.enc_layers, "dec_layers": cfg.dec_layers, "dim_feedforward": cfg.dim_feedforward,
              "hidden_dim": cfg.hidden_dim, "dropout": 0.1, "nheads": cfg.nheads, "pre_norm": False,
              "position_embedding": "sine", "backbone_lr": None, "keep_other_self_attn_dec": cfg.keep_other_self_attn,
              "keep_first_self_attn_dec": cfg.keep_first_self_attn, "keep_input_proj": cfg.keep_input_proj,
              "amp": True, "batch_size": 64, "epochs": 80, "lr": 1e-4, "weight_decay": 1e-2, "ema_decay": 0.9997}
    (checkpoint.parent / "config_new.json").write_text(json.dumps(config, indent=2))
    return {"state": state, "dropped": [r"^backbone\.1\.pe$", r"\.relative_position_index$", r"\.attn_mask$"]}


def _exp_config(params, mp, classes, exp_dir: Path, **extra) -> None:
    cfg = mp.model
    _config_yaml(exp_dir / "config.yaml", {
        "model": mp.model_name, "backbone": getattr(cfg, "backbone", None), "data": params.data.source,
        "img_size": mp.input.image_size, "num_classes": classes, "pretrained": True, "embed_type": "bert",
        "exp_dir": exp_dir.as_posix(), "ckpt_dir": (exp_dir / "checkpoints").as_posix(), **extra})


def write_salgl(params, mp, classes: int, checkpoint: Path) -> dict:
    """``experiments/salgl_<backbone>_<data>/expN/checkpoints/ema_best_model.pth`` (ModelEma: ``module.``)
    beside ``expN/config.yaml``; the label embeddings are the file's buffer (BERT: [C, 768])."""
    cfg = mp.model
    body, width, _ = _backbone(cfg.backbone, "salgl")
    keys = salgl_keys({f"backbone.{k}": s for k, s in body.items()}, width, classes, cfg.num_scenes, 768,
                      cfg.dim_feedforward, cfg.att_dim, cfg.num_steps, cfg.outmess)
    state = official_tensors(keys)
    save_as_authors(_prefixed(state, "module."), checkpoint)
    _exp_config(params, mp, classes, checkpoint.parent.parent, num_scenes=cfg.num_scenes, num_steps=cfg.num_steps)
    return {"state": state, "dropped": []}


def write_sgre(params, mp, classes: int, checkpoint: Path) -> dict:
    """``experiments/mlic_<data>/expN/checkpoints/best_ema_model.pth`` (ModelEma: ``module.``) beside
    ``expN/config.yaml``; no label embeddings in the file."""
    cfg = mp.model
    body, width, stride = _backbone(cfg.backbone, "sgre")
    keys = sgre_keys({f"backbone.{k}": s for k, s in body.items()}, width, classes, mp.input.image_size // stride,
                     cfg.enc_layers, cfg.dim_feedforward, cfg.att_dim, 768)
    state = official_tensors(keys)
    save_as_authors(_prefixed(state, "module."), checkpoint)
    _exp_config(params, mp, classes, checkpoint.parent.parent, pos=cfg.pos, rm_cls=cfg.rm_cls)
    # the PE buffer is recomputed; the vendored ViT's 1000-class head is never called
    return {"state": state, "dropped": [r"^position_embedding\.pe$", r"^backbone\.head\."]}


def write_mkt(params, mp, classes: int, checkpoint: Path) -> dict:
    """Stage 1: ``model_epoch_<e>.pth``, the bare CLIPVIT state dict; stage 2: ``model_<e>.pth``, the
    PromptLearner's DDP state dict (``module.``), whose text weights are the CLIP's but for the tuned token
    table.  Stage 2 loads the stage-1 file the params name (``image_checkpoint``)."""
    if mp.model.stage == "image":
        state = official_tensors(mkt_stage1_keys(), first=2000)
        save_as_authors(state, checkpoint)
        return {"state": state, "dropped": [r"^projection\."]}
    clip = official_tensors(clip_keys(), first=3000)               # the CLIP both stages start from
    keys = mkt_stage2_keys()
    state = OrderedDict((k, clip[k]) for k in keys)
    state["token_embedding.weight"] = torch.full((), 0.75).expand(keys["token_embedding.weight"])   # tuned
    save_as_authors(_prefixed(state, "module."), checkpoint)
    return {"state": {"token_embedding.weight": state["token_embedding.weight"]}, "dropped": []}


def write_qks(params, mp, classes: int, checkpoint: Path) -> dict:
    """``experiments/qks_<data>/expN/checkpoints/best_model.pth``: the DDP model's whole state dict
    (``module.``, frozen CLIP included) beside ``expN/config.yaml``."""
    cfg = mp.model
    state = official_tensors(qks_keys(cfg.num_layers, cfg.num_query_tokens),
                             fixed={"net.embeddings.position_ids": torch.arange(512)[None]})
    save_as_authors(_prefixed(state, "module."), checkpoint)
    _exp_config(params, mp, classes, checkpoint.parent.parent, num_hidden_layers=cfg.num_layers,
                num_query_tokens=cfg.num_query_tokens)
    return {"state": state, "dropped": [r"^clip_model\.(?!visual\.)", r"^net\.embeddings\.(word|position)",
                                        r"^net\.encoder\.layer\.\d+\.(intermediate|output)\."]}


WRITERS = {"q2l": write_q2l, "salgl": write_salgl, "sgre": write_sgre, "mkt": write_mkt, "qks": write_qks}
# the file names the authors give their files (a user keeps them; the params may name them otherwise)
AUTHORS_FILES = {"q2l": "{model}/checkpoint.pkl", "salgl": "{model}/checkpoints/ema_best_model.pth",
                 "sgre": "{model}/checkpoints/best_ema_model.pth", "mkt": "model_epoch_19.pth",
                 "mkt_prompt": "model_3.pth", "qks": "{model}/checkpoints/best_model.pth"}


# ------------------------------------------------------------------------------------------------------------
# A checkout of the test's own: the params files as they are, a dataset manifest where they point
# ------------------------------------------------------------------------------------------------------------
def _chain(params_file: Path) -> list[Path]:
    files = [params_file]
    while (base := (yaml.safe_load(files[-1].read_text()) or {}).get("extends")):
        files.append((files[-1].parent / base).resolve())
    return files


def _manifest(out: Path, n_seen: int, n_unseen: int = 0) -> None:
    images = out.parent / f"{out.name}_images"
    images.mkdir(parents=True, exist_ok=True)
    labels = [Label(i, f"l{i}", f"label {i}", seen=i < n_seen) for i in range(n_seen + n_unseen)]
    splits = {}
    for split in ("train", "test"):
        name = f"{split}.jpg"
        Image.new("RGB", (32, 32), (120, 60, 30)).save(images / name)
        splits[split] = pd.DataFrame([{"image": name, "pos": [0, n_seen + n_unseen - 1]}])
    write_manifest(out, name="fixture", labels=labels, splits=splits, image_root=str(images))


def label_count(params, mp) -> int:
    """The dataset's label count for a closed-set release (its file's shapes depend on it); an open-vocabulary
    release holds no per-label weight, so one seen label (and one unseen) will do."""
    from mlc.runs.build import DATASET_CLASSES
    return 1 if mp.model_name in ("mkt", "qks") else DATASET_CLASSES[params.data.source]


def fake_openai_clip(monkeypatch, tmp_path) -> dict:
    """OpenAI's CLIP ViT-B/16 where open_clip keeps it (the Hugging Face cache of ``mlc.weights``), in an empty
    cache of the test's own; returns its tensors."""
    import huggingface_hub.constants
    import open_clip

    from mlc.modeling.clip import _register_configs
    _register_configs()
    hub = open_clip.get_pretrained_cfg("ViT-B-16-quickgelu", "openai")["hf_hub"].rstrip("/")
    cache = tmp_path / "hf-cache"
    repo = cache / f"models--{hub.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    state = official_tensors(clip_keys(), first=3000)
    torch.save(state, snapshot / "open_clip_pytorch_model.bin")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))                # no ~/.cache/clip of the machine
    return state


def checkout(tmp_path, released_file: Path) -> Path:
    """A kit checkout under tmp_path with ``released_file`` and every file it extends copied unchanged, and a
    manifest of the dataset at the params' ``data.manifest`` (few images; the label count of the dataset for
    a closed-set release, a few seen / unseen labels for an open-vocabulary one)."""
    kit = tmp_path / "kit"
    (kit / "notebooks").mkdir(parents=True)
    (kit / "pyproject.toml").write_text("[project]\nname = 'kit-under-test'\n")
    for f in _chain(released_file):
        dest = kit / f.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dest)
    copied = kit / released_file.relative_to(ROOT)
    params = load_params(copied)
    assert params.base_dir == str(kit.resolve())
    mp = method_params(params, params.released.method)
    classes = label_count(params, mp)
    _manifest(params.dataset_root(), classes, 1 if mp.model_name in ("mkt", "qks") else 0)
    return copied


@pytest.fixture
def cheap_init(monkeypatch):
    """Random initialisation of a paper-size model costs seconds to tens of seconds on 2 CPU cores; the strict
    load replaces every weight and persistent buffer, so the models are built without it."""
    import timm.layers.weight_init

    def keep(tensor, *args, **kwargs):
        return tensor
    for name in ("uniform_", "normal_", "random_", "bernoulli_", "exponential_", "log_normal_", "cauchy_",
                 "geometric_"):
        monkeypatch.setattr(torch.Tensor, name, keep)
    monkeypatch.setattr(torch.nn.init, "_no_grad_trunc_normal_", keep)
    monkeypatch.setattr(timm.layers.weight_init, "_trunc_normal_", keep)


def _writer_key(mp) -> str:
    return "mkt_prompt" if mp.model_name == "mkt" and mp.model.stage == "prompt" else mp.model_name


def _sampled_values(model) -> set[float]:
    """The values in the model's floating state (each tensor sampled at ~257 evenly spaced places)."""
    seen = set()
    for t in model.state_dict().values():
        if t.is_floating_point() and t.numel():
            flat = t.detach().reshape(-1)
            k = min(flat.numel(), 257)
            idx = torch.arange(k) * (flat.numel() - 1) // max(k - 1, 1)
            seen.update(torch.unique(flat[idx]).tolist())
    return seen


def assert_every_weight_landed(model, written: dict, *extra_sources: dict) -> None:
    """Every tensor of the file (but those the method drops by design) is in the model, and nothing in the
    model's floating state came from elsewhere than the files (a weight left at its initialisation would)."""
    dropped = [re.compile(p) for p in written["dropped"]]
    have = _sampled_values(model)

    def values(state):
        out = {}
        for k, v in state.items():
            if v.is_floating_point():
                c = v.reshape(-1)[:1]
                out[k] = (c.item(), (c.abs() + 1e-5).item())      # InPlaceABN weights load as |w| + 1e-5
        return out

    ours = values(written["state"])
    missing = [k for k, (v, abn) in ours.items() if not any(p.search(k) for p in dropped) and v not in have
               and abn not in have]
    assert not missing, f"{len(missing)} tensors of the file are not in the model, e.g. {missing[:5]}"
    allowed = {x for src in (written["state"], *extra_sources) for pair in values(src).values() for x in pair}
    stray = sorted(have - allowed)
    assert not stray, f"{len(stray)} values in the model come from no file, e.g. {stray[:5]}"


def _forward(model, size: int, classes: int) -> None:
    with torch.no_grad():
        out = model(torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)))
    assert out["logits"].shape == (1, classes) and torch.isfinite(out["logits"]).all()


# ------------------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------------------
def test_every_released_params_file_has_a_container_writer():
    """A new file in params/released/ is covered by the parametrised test below only if its method's container
    is written down here."""
    assert len(RELEASED) >= 17
    for f in RELEASED:
        params = load_params(f)
        mp = method_params(params, params.released.method)
        assert mp.model_name in WRITERS, f"{f.name}: no writer of {mp.model_name}'s release container"
        assert _writer_key(mp) in AUTHORS_FILES, f"{f.name}: no authors' file name for {_writer_key(mp)}"
        label_count(params, mp)                                     # a known label count of its dataset
        if hasattr(mp.model, "backbone"):
            _backbone(mp.model.backbone, mp.model_name)             # an official layout of its backbone
        if mp.model_name == "q2l":
            assert mp.model.backbone in Q2L_NAMES, f"{f.name}: Q2L's --backbone name of {mp.model.backbone}?"


@pytest.mark.parametrize("record, layout", [
    ("q2l-small", lambda c: q2l_keys({f"backbone.0.body.{k}": s for k, s in
                                      resnet_keys((2, 2, 2, 2), bottleneck=False, frozen_bn=True).items()},
                                     512, 7, c["hidden_dim"], c["dim_feedforward"], c["enc_layers"],
                                     c["dec_layers"], c["num_class"])),
    ("salgl-small", lambda c: salgl_keys({f"backbone.{k}": s for k, s in resnet_keys((3, 4, 6, 3)).items()}, 2048,
                                         c["num_classes"], c["num_scenes"], c["embed_dim"],
                                         c["encoder"]["dim_feedforward"], c["att_dim"], c["num_steps"], c["outmess"])),
    ("salgl-small-soft", lambda c: salgl_keys({f"backbone.{k}": s for k, s in resnet_keys((3, 4, 6, 3)).items()},
                                              2048, c["num_classes"], c["num_scenes"], c["embed_dim"],
                                              c["encoder"]["dim_feedforward"], c["att_dim"], c["num_steps"],
                                              c["outmess"])),
    ("sgre-small", lambda c: sgre_keys({f"backbone.{k}": s for k, s in resnet_keys((3, 4, 6, 3)).items()}, 2048,
                                       c["num_classes"], 7, c["num_layers"], c["encoder_dim_feedforward"],
                                       c["att_dim"], c["embed_dim"])),
    ("mkt-small", lambda c: mkt_stage1_keys(c["clip_ctor"])),
    ("qks-small", lambda c: qks_keys(c["num_hidden_layers"], c["num_query_tokens"], c["clip_ctor"])),
])
def test_the_written_layouts_are_the_official_ones(record, layout, oracles):
    """Each layout above, at an oracle record's configuration, is the record's keys.json (the official model's
    state dict): names, shapes and order."""
    keys = json.loads((oracles / record / "keys.json").read_text())
    config = torch.load(oracles / record / "oracle.pt", map_location="cpu", weights_only=True)["config"]
    assert [(k, tuple(s)) for k, s, _ in keys] == list(layout(config).items())


def _case(released_file: Path):
    """The heaviest (CvT-w24 and Swin-L forwards, QKS's 85 CLIP prompts, 10-20 s each here) are marked slow."""
    params = load_params(released_file)
    mp = method_params(params, params.released.method)
    heavy = mp.model_name == "qks" or getattr(mp.model, "backbone", "") in ("cvt_w24_384", "swin_large_384")
    return pytest.param(released_file, id=released_file.stem, marks=[pytest.mark.slow] if heavy else [])


@pytest.mark.parametrize("released_file", [_case(f) for f in RELEASED])
def test_release_as_shipped_loads_through_its_params_unchanged(released_file, tmp_path, monkeypatch, cheap_init):
    """The release in its authors' container at a user's own path (``checkpoint=``; nothing at the params' own
    paths, so a Q2L release brings its own config_new.json), then at the params' own paths (no ``checkpoint=``):
    every weight of the file lands in the model, and a forward pass gives finite logits for the labels."""
    for env in ("MLC_OUTPUT_ROOT", "MLC_LAUNCH_BASE_DIR"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("MLC_OFFLINE", "1")                 # open_clip finds the test's CLIP, never the network
    params_file = checkout(tmp_path, released_file)
    assert params_file.read_bytes() == released_file.read_bytes()
    params = load_params(params_file)
    name = params.released.method
    mp = method_params(params, name)
    key, writer = _writer_key(mp), WRITERS[mp.model_name]
    open_vocab = mp.model_name in ("mkt", "qks")
    classes = label_count(params, mp)
    extra = []
    if open_vocab:
        extra.append(fake_openai_clip(monkeypatch, tmp_path))
    if key == "mkt_prompt":                 # stage 2 is built on the stage-1 file the params name
        stage1 = SimpleNamespace(model=SimpleNamespace(stage="image"))
        extra.append(write_mkt(params, stage1, classes, params.resolve_path(mp.model.image_checkpoint))["state"])
    if mp.model_name == "sgre":             # `mlc embeddings` writes the BERT table where the params point
        table = params.resolve_path(mp.model.label_embeddings)
        table.parent.mkdir(parents=True, exist_ok=True)
        np.save(table, np.full((classes, 768), 0.25))
    own = params.resolve_path(params.released.checkpoint)
    folder = Path(params.released.checkpoint).parent.name if mp.model_name in ("q2l",) else \
        Path(params.released.checkpoint).parent.parent.name
    mine = tmp_path / "downloads" / AUTHORS_FILES[key].format(model=folder)

    # a user's own path, given as checkpoint=: the side files beside it; nothing at the params' own paths
    assert not own.exists()
    written = writer(params, mp, classes, mine)
    loaded = mlc.load(params_file, checkpoint=mine)
    assert loaded.weights["kind"] == "released" and loaded.weights["checkpoint"] == str(mine.resolve())
    assert (", 'module.' prefixed" in loaded.weights["format"]) == (mp.model_name in ("q2l", "salgl", "sgre", "qks")
                                                                 or key == "mkt_prompt")
    assert_every_weight_landed(loaded.model, written, *extra)
    del loaded

    # the params' own paths, no checkpoint=
    written = writer(params, mp, classes, own)
    if params.released.config:              # Q2L: the config_new.json the params name is the one beside it
        assert params.resolve_path(params.released.config).is_file()
    loaded = mlc.load(params_file)
    assert loaded.weights["kind"] == "released" and loaded.weights["checkpoint"] == str(own.resolve())
    assert_every_weight_landed(loaded.model, written, *extra)
    if mp.model_name == "salgl":            # the file's own table (BERT: 768 wide), not one of the backbone's width
        assert tuple(loaded.model.label_embeddings.shape) == (classes, 768)
    _forward(loaded.model, mp.input.image_size, classes)
