"""The kit's training step against the official code's, at each method's paper configuration (issue 24).

    PYTHONPATH=lib python benchmarks/vs_official.py --official-root ~/src/query2labels --method q2l
    PYTHONPATH=lib python benchmarks/vs_official.py --official-root ~/src/official --method all
    PYTHONPATH=lib python benchmarks/vs_official.py --official-root ~/src/official --method all --device cuda \\
        --batch 32 --steps 20 --warmup 3            # untested here (no GPU on the development machine)

``--official-root`` is the user's own checkout of the official repository (nothing of it is copied into the
kit; it is imported from there at run time).  With ``--method all`` it is a folder holding one checkout per
method, named after the method or after its repository (the first that exists):

    q2l/   or query2labels/  SlongLiu/query2labels  (results here: 55eb050)
    salgl/ or SALGL/         jasonseu/SALGL         (a77cab3)
    sgre/  or SGRE/          jasonseu/SGRE          (8439d14; model ``mlic``)
    mkt/   or MKT/           sunanhe/MKT            (8db956d)
    qks/   or QKS/           jasonseu/QKS           (d06ead7)

Each method then runs in a process of its own (the repositories share the package names ``models``, ``lib``
and ``utils``).  The checkout's commit (``git -C DIR rev-parse HEAD``, else "unknown") goes into the results.

What one step is, on each side, on the same synthetic batch (``train_step.synthetic_batch``: the paper
resolution, random images, multi-hot targets, which the official MKT and QKS code gets as +1 / -1 as it reads
NUS-WIDE, the kit as 1 / 0 as its manifests hold them), the same device and ``--threads`` CPU threads:

* official: the official model built by the official builder at the paper config with random weights, the
  official loss and the official optimizer with the official lr / weight decay, stepped as the official train
  loop does (forward and loss under the official autocast, ``zero_grad``, GradScaler backward and step).
  Q2L: ``build_q2l`` (README R101-448 arguments), ``AsymmetricLossOptimized(2, 0, 0, dtgfl)``, AdamW 1e-4 /
  1e-2 over the trainable parameters.  SALGL (no train.py in the repository): ``create_model('salgl')`` with the
  parser defaults, ``lib.utils.get_loss_fn`` (ASL) + sample and batch scene entropy (weights 1), AdamW 1e-4 /
  1e-2 via ``get_trainable_params`` (mode full) and ``get_optimizer``, stepped as SGRE's train.py.  SGRE:
  ``create_model('mlic')`` with the README COCO command (``--pos --lamda 0.4 --lr 9e-5``), the loss its forward
  computes in training, ``get_optimizer`` (AdamW, wd 1e-4).  MKT (stage 1): ``CLIPVIT`` on the repository's
  CLIP ViT-B/16 (``clip.model.build_model``, as ``clip.load(jit=False)`` builds it), ``ranking_lossT`` + L1
  distillation to a second frozen CLIP, ``build_optimizer`` (layer decay 0.65, fix_layer 10, lr 1e-3, wd
  0.05), the empty-label filter of ``engine_nus_first_stage.train``.  QKS: ``create_model('qks')`` with the
  README NUS-WIDE command (7 layers, 12 queries), ASL (gamma_neg 4), ``get_optimizer`` (AdamW 1e-5 / 1e-4).
* kit: ``mlc.runs.build.untrained_method`` at the paper config (params/<method>/...), AdamW from
  ``build_param_groups`` / ``make_adamw``, one step as the engine's loop (as ``train_step.py``).

Neither side includes the learning-rate schedule, the EMA update, data loading or logging (both do each of
them in real training).  Weights: the official model's random weights are converted into the kit model with the
kit's own official-checkpoint converter (``mlc.core.registry.official_format``), so both compute on the same
numbers; their eval-mode logits on the batch are compared (``max_abs_logit_diff``).  Q2L's frozen BatchNorm is
set to the statistics of the batch first (as ``train_step.calibrate_frozen_batchnorm``), else the random
ResNet's losses are NaN.  Parameter counts are printed and checked: the official model's parameters minus those its
forward never uses (MKT's dead ``projection`` MLP; QKS's CLIP text tower and BERT's word/position embeddings and
text FFN, which the kit leaves out) must equal the kit's, and so must the number that received a gradient.

Precision.  The official code runs fp32 on a CPU (its autocast is CUDA's).  On CUDA it runs what its README
command asks for (``--official-amp readme``): Q2L ``--amp`` (fp16 autocast + GradScaler); SGRE and QKS commands
have no ``--amp`` (fp32); SALGL has no command (its parser's ``--amp`` is off: fp32); MKT stage 1 has no AMP
(fp32 student, the fp16 CLIP teacher ``clip.load`` gives on CUDA).  The kit runs two modes: ``users``, its paper
config as it is (``train.amp`` etc.: fp16 in every paper config but MKT's, which on a CPU means fp32), and
``same``, the same with the official precision.  Where both resolve to the same autocast (always on a CPU) the
kit is measured once and the row says so.  Ratios are official s/step / kit s/step (> 1: the kit is faster).

Running the official code on a current stack needs these, applied only where needed and listed per row
(``official_patches``); none changes what a step computes:
* no downloads: torchvision's ResNet-101 built without weights (Q2L hard-codes ``pretrained=True``), SGRE's
  ``create_backbone`` called with ``pretrained=False`` (it forces True), SALGL built with its own
  ``pretrained=False``, the CLIP of MKT and QKS built from the ViT-B/16 architecture (``clip.model.CLIP`` +
  ``build_model``) instead of ``clip.load`` downloading it, QKS's ``BertConfig.from_pretrained('bert-base-
  uncased')`` replaced by ``BertConfig()`` (the same numbers; only the config comes from the Hub, the weights are
  random officially too), QKS's text-feature caches written beforehand with the kit's label table (the official
  code reads them when present).
* on a CPU, ``Tensor.cuda()`` returns the tensor (SALGL, SGRE, MKT's loss and QKS call it); on CUDA untouched.
* packages the R101 / ViT-B/16 configurations never call: a package's ``__init__`` that imports every backbone is
  skipped (``models`` etc. are registered as bare packages and only the modules the configuration needs are
  imported), and missing ``addict``, ``yapf`` (Q2L's config printer) and ``einops`` (Q2L's CvT) are stubbed with
  classes that raise if ever called; ``pkg_resources`` (gone from setuptools >= 81), which QKS's CLIP uses only
  to compare torch versions, is given the ``packaging`` it re-exported.
* transformers >= 5 (QKS's vendored BLIP-2 BERT was written for 4.x): the names moved from
  ``transformers.modeling_utils`` to ``pytorch_utils`` are put back, and the 4.x ``init_weights`` (apply
  ``_init_weights``), ``invert_attention_mask`` and ``get_head_mask`` (no head mask) are given to its
  ``BertPreTrainedModel``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import json
import logging
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_step import PAPER_CONFIGS, calibrate_frozen_batchnorm, synthetic_batch  # noqa: E402

from mlc.config.params import load_params  # noqa: E402
from mlc.engine.optim import build_param_groups, make_adamw  # noqa: E402
from mlc.engine.precision import Autocast, resolve_amp  # noqa: E402
from mlc.runs.build import DATASET_CLASSES, build_method, untrained_method  # noqa: E402

METHODS = ("q2l", "salgl", "sgre", "mkt", "qks")
REPOS = {"q2l": "SlongLiu/query2labels", "salgl": "jasonseu/SALGL", "sgre": "jasonseu/SGRE", "mkt": "sunanhe/MKT",
         "qks": "jasonseu/QKS"}
FOLDERS = {"q2l": ("q2l", "query2labels"), "salgl": ("salgl", "SALGL"), "sgre": ("sgre", "SGRE"),
           "mkt": ("mkt", "MKT"), "qks": ("qks", "QKS")}
CLOSED_SET = ("q2l", "salgl", "sgre")
# the official precision on CUDA (README commands; see the module docstring); fp32 on a CPU
OFFICIAL_CUDA_AMP = {"q2l": "fp16", "salgl": "none", "sgre": "none", "mkt": "none", "qks": "none"}
# official parameters the forward never uses (the kit leaves them out)
OFFICIAL_UNUSED = {"mkt": r"^projection\.",
                   "qks": r"^clip_model\.(?!visual\.)|^net\.embeddings\.(word_embeddings|position_embeddings)\.|"
                          r"^net\.encoder\.layer\.\d+\.(intermediate|output)\."}
GOALS = {"cpu": 1.2, "cuda": 1.5}     # issue 24: kit step this much faster than the official one (closed-set)
# CLIP ViT-B/16 as clip.model.build_model derives it from OpenAI's file: embed 512, 224 px, 12 layers of width
# 768, patch 16; text: context 77, vocabulary 49408, width 512, 8 heads, 12 layers
VIT_B16 = (512, 224, 12, 768, 16, 77, 49408, 512, 8, 12)


# ------------------------------------------------------------------------------ importing the official code
class _Missing:
    """What a stubbed package's names are: a class that fails when used (never, on the measured configs)."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__} belongs to a package stubbed by vs_official.py (not installed)")


def _stub_if_missing(dotted: str, notes: list[str], why: str) -> None:
    """Put an empty module (and its parents) in sys.modules when the package is not installed."""
    if importlib.util.find_spec(dotted.split(".")[0]) is not None:
        return
    parts = dotted.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = []
            module.__getattr__ = lambda attr: type(attr, (_Missing,), {})
            sys.modules[name] = module
    notes.append(f"stub {parts[0]} (not installed; {why})")


def _bare_package(name: str, path: Path) -> None:
    """Register ``name`` as a package at ``path`` without running its ``__init__``."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module


_CUDA_CALLS = [0]


@contextlib.contextmanager
def official_device_calls(device: torch.device):
    """On a CPU, ``Tensor.cuda()`` (called by SALGL, SGRE, MKT's loss and QKS) returns the tensor itself."""
    if device.type == "cuda":
        yield
        return
    saved = torch.Tensor.cuda

    def stay(self, *args, **kwargs):
        _CUDA_CALLS[0] += 1
        return self
    torch.Tensor.cuda = stay
    try:
        yield
    finally:
        torch.Tensor.cuda = saved


@dataclasses.dataclass
class Official:
    model: torch.nn.Module
    step: object              # () -> loss tensor: one official training step
    logits: object            # () -> eval-mode logits [B, C] on the batch (columns as the kit's)
    optimizer: torch.optim.Optimizer
    precision: str
    notes: list
    cudnn: dict               # cudnn.benchmark / deterministic the official script sets (CUDA)


def _scaled_step(forward_loss, optimizer, device, amp: bool):
    """The official loops' step: autocast(enabled=amp) forward and loss, zero_grad, GradScaler backward/step."""
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp and device.type == "cuda"):
            loss = forward_loss()
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()
    return step


def build_official_q2l(root: Path, device, images, targets, amp: bool, label_table, tmp) -> Official:
    notes: list[str] = []
    _stub_if_missing("addict", notes, "utils/slconfig.py, the config printer")
    _stub_if_missing("yapf.yapflib.yapf_api", notes, "utils/slconfig.py, the config printer")
    _stub_if_missing("einops.layers.torch", notes, "models/cls_cvt, the CvT backbone")
    sys.path.insert(0, str(root / "lib"))              # what _init_paths.py does
    _bare_package("models", root / "lib" / "models")   # its __init__ imports TResNet (inplace_abn)
    _bare_package("utils", root / "lib" / "utils")
    notes.append("models/__init__ skipped (imports TResNet: inplace_abn); only the R101 path imported")
    import torchvision
    q2l = importlib.import_module("models.query2label")
    aslloss = importlib.import_module("models.aslloss")
    args = argparse.Namespace(backbone="resnet101", img_size=images.shape[-1], num_class=targets.shape[1],
                              hidden_dim=2048, dim_feedforward=8192, enc_layers=1, dec_layers=2, nheads=4,
                              dropout=0.1, pre_norm=False, position_embedding="sine", keep_other_self_attn_dec=False,
                              keep_first_self_attn_dec=False, keep_input_proj=False, pretrained=False, lr=1e-4,
                              weight_decay=1e-2, gamma_neg=2.0, gamma_pos=0.0, loss_clip=0.0, dtgfl=True, eps=1e-5)
    resnet101 = torchvision.models.resnet101

    def no_download(*a, pretrained=False, **kw):          # backbone.py passes pretrained=True (ImageNet download)
        return resnet101(*a, weights=None, **kw)
    torchvision.models.resnet101 = no_download
    notes.append("torchvision resnet101 built without ImageNet weights (official: pretrained=True)")
    try:
        model = q2l.build_q2l(args).to(device)
    finally:
        torchvision.models.resnet101 = resnet101
    criterion = aslloss.AsymmetricLossOptimized(gamma_neg=args.gamma_neg, gamma_pos=args.gamma_pos, clip=args.loss_clip,
                                                disable_torch_grad_focal_loss=args.dtgfl, eps=args.eps)
    # main_mlc.py: AdamW over the trainable parameters (lr x batch/256 is overwritten by OneCycleLR: lr)
    optimizer = torch.optim.AdamW([{"params": [p for p in model.parameters() if p.requires_grad]}], args.lr,
                                  betas=(0.9, 0.999), eps=1e-08, weight_decay=args.weight_decay)
    model.train()
    step = _scaled_step(lambda: criterion(model(images), targets), optimizer, device, amp)
    return Official(model, step, lambda: model(images), optimizer, "fp16" if amp else "fp32", notes,
                    {"benchmark": True, "deterministic": False})


def _bert_table(tmp: Path, label_table: torch.Tensor) -> str:
    path = tmp / "bert.npy"
    np.save(path, label_table.cpu().numpy().astype(np.float64))
    return str(path)


def build_official_salgl(root: Path, device, images, targets, amp: bool, label_table, tmp) -> Official:
    notes: list[str] = ["no train.py in the repository: loss ASL + sample_en + batch_en (lamda 1), optimizer and "
                        "step as SGRE's train.py (lib/utils get_optimizer, get_trainable_params mode full)"]
    sys.path.insert(0, str(root))
    _bare_package("models", root / "models")           # its __init__ also imports the vendored timm ViT / Swin
    _bare_package("lib", root / "lib")
    importlib.import_module("models.resnet")           # registers the ResNet backbones
    factory = importlib.import_module("models.factory")
    importlib.import_module("models.salgl")
    lib_utils = importlib.import_module("lib.utils")
    cfg = argparse.Namespace(model="salgl", backbone="resnet101", img_size=images.shape[-1],
                             num_classes=targets.shape[1], embed_type="bert", embed_path=_bert_table(tmp, label_table),
                             num_scenes=4, num_steps=3, outmess=False, normalize=False, ignore_self=False, soft=False,
                             pos=False, distributed=False, lamda=1.0, loss="asl", gamma_neg=2.0, gamma_pos=0.0,
                             clip=0.0, optimizer="AdamW", lr=1e-4, weight_decay=1e-2, mode="full")
    with official_device_calls(device):
        model = factory.create_model("salgl", False, cfg=cfg).to(device)   # pretrained=False: no download
        if hasattr(model, "max_en"):
            model.max_en = model.max_en.to(device)
    criterion = lib_utils.get_loss_fn(cfg)
    optimizer = lib_utils.get_optimizer(lib_utils.get_trainable_params(model, cfg), cfg)
    model.train()

    def forward_loss():
        out = model(images, targets)
        return criterion(out["logits"], targets) + cfg.lamda * (out["sample_en"] + out["batch_en"])
    return Official(model, _scaled_step(forward_loss, optimizer, device, amp), lambda: model(images)["logits"],
                    optimizer, "fp16" if amp else "fp32", notes, {"benchmark": False, "deterministic": True})


def build_official_sgre(root: Path, device, images, targets, amp: bool, label_table, tmp) -> Official:
    notes: list[str] = []
    sys.path.insert(0, str(root))
    _bare_package("models", root / "models")   # its __init__ imports TResNet (inplace_abn), CvT, timm copies
    _bare_package("lib", root / "lib")
    notes.append("models/__init__ skipped (imports TResNet: inplace_abn, CvT); only the R101 path imported")
    importlib.import_module("models.torch_models")     # registers the ResNet backbones
    factory = importlib.import_module("models.factory")
    mlic = importlib.import_module("models.mlic")
    lib_util = importlib.import_module("lib.util")
    cfg = argparse.Namespace(model="mlic", arch="resnet101", img_size=images.shape[-1], num_classes=targets.shape[1],
                             pos=True, rm_cls=False, num_heads=8, num_layers=1, normalize_before=False,
                             embed_type="bert", embed_path=_bert_table(tmp, label_table), tau=1.0, lamda=0.4,
                             loss="asl", gamma_neg=2.0, gamma_pos=0.0, clip=0.0, optimizer="AdamW", lr=9e-5,
                             weight_decay=1e-4)

    def create_backbone(name, **kwargs):                   # factory.create_backbone forces pretrained=True
        fn, feat_dim = factory.backbone_entrypoint(name)
        return fn(False, **kwargs), feat_dim
    mlic.create_backbone = create_backbone
    notes.append("create_backbone called with pretrained=False (official: forced True, an ImageNet download)")
    with official_device_calls(device):
        model = factory.create_model("mlic", cfg=cfg).to(device)
    if torch.is_tensor(getattr(model, "embeddings", None)):
        model.embeddings = model.embeddings.to(device)  # a plain attribute (.cuda() officially): not moved by .to
    optimizer = lib_util.get_optimizer(model.parameters(), cfg)
    model.train()
    step = _scaled_step(lambda: model(images, y=targets)["ce_loss"], optimizer, device, amp)
    return Official(model, step, lambda: model(images)["logits"], optimizer, "fp16" if amp else "fp32", notes,
                    {"benchmark": False, "deterministic": True})


def _random_clip(clip_model_module, device):
    """``clip.load(jit=False)`` on a state dict of the ViT-B/16 architecture with random weights."""
    sd = clip_model_module.CLIP(*VIT_B16).state_dict()
    model = clip_model_module.build_model(dict(sd)).to(device)
    if str(device) == "cpu":
        model.float()
    return model, sd


def build_official_mkt(root: Path, device, images, targets, amp: bool, label_table, tmp) -> Official:
    notes: list[str] = ["CLIP ViT-B/16 built from the architecture with random weights (clip.model.CLIP + "
                        "build_model, as clip.load(jit=False) does with OpenAI's file)"]
    sys.path.insert(0, str(root))
    for name in ("clip", "models", "utils"):
        sys.modules.pop(name, None)
    _bare_package("models", root / "models")
    _bare_package("utils", root / "utils")
    clip_model_module = importlib.import_module("clip.model")
    clip_vit = importlib.import_module("models.clip_vit")
    rank_loss = importlib.import_module("models.rank_loss")
    optim = importlib.import_module("utils.optimizer")
    misc = importlib.import_module("utils.misc")
    args = argparse.Namespace(topk=16, fix_layer=10, layer_decay=0.65, lr=1e-3, weight_decay=0.05)
    torch.manual_seed(1)
    student_clip, sd = _random_clip(clip_model_module, device)
    model = clip_vit.CLIPVIT(args, student_clip)
    misc.convert_models_to_fp32(model)
    model = model.to(device)
    teacher = clip_model_module.build_model(dict(sd)).to(device)   # the second clip.load: the same weights
    if device.type == "cpu":
        teacher.float()
    teacher.eval()
    del student_clip
    optimizer = optim.build_optimizer(args, model)
    label_embed = label_table.to(device).float()
    model.train()
    import torch.nn.functional as F

    def step():                             # engine_nus_first_stage.train, one iteration (no AMP)
        optimizer.zero_grad()
        seen = torch.clamp(targets, 0, 1).sum(1)
        labels, inputs = targets[seen > 0], images[seen > 0]
        logits, _, dist_feat = model(inputs, label_embed)
        loss = rank_loss.ranking_lossT(logits, labels.float())
        with torch.no_grad():
            _, teacher_feat = teacher.encode_image(inputs)
        loss = F.l1_loss(dist_feat, teacher_feat.float()) + loss
        loss.requires_grad_()
        loss.backward()
        optimizer.step()
        return loss.detach()
    precision = "fp32 (teacher fp16)" if device.type == "cuda" else "fp32"
    return Official(model, step, lambda: model(images, label_embed)[0], optimizer, precision, notes,
                    {"benchmark": True, "deterministic": True})


def _transformers4_compat(bert_utils, notes: list[str]) -> None:
    """QKS vendors BLIP-2's BERT, written against transformers 4.x; give it the 4.x pieces 5.x dropped."""
    pretrained = bert_utils.BertPreTrainedModel
    if not hasattr(pretrained, "invert_attention_mask"):
        def invert_attention_mask(self, mask):
            extended = mask[:, None, :, :] if mask.dim() == 3 else mask[:, None, None, :]
            extended = extended.to(dtype=self.dtype)
            return (1.0 - extended) * torch.finfo(self.dtype).min

        def get_head_mask(self, head_mask, num_hidden_layers, is_attention_chunked=False):
            if head_mask is not None:
                raise NotImplementedError("vs_official.py's transformers-4 get_head_mask handles no head mask")
            return [None] * num_hidden_layers
        pretrained.invert_attention_mask = invert_attention_mask
        pretrained.get_head_mask = get_head_mask
        pretrained.init_weights = lambda self: self.apply(self._init_weights)   # 4.x, no tied weights here
        notes.append("transformers >= 5: BertPreTrainedModel given 4.x init_weights, invert_attention_mask, "
                     "get_head_mask")


def _patch_transformers_names(notes: list[str]) -> None:
    import transformers.modeling_utils as modeling_utils
    import transformers.pytorch_utils as pytorch_utils
    moved = []
    for name in ("apply_chunking_to_forward", "find_pruneable_heads_and_indices", "prune_linear_layer"):
        if not hasattr(modeling_utils, name):
            if hasattr(pytorch_utils, name):
                setattr(modeling_utils, name, getattr(pytorch_utils, name))
            else:                                  # find_pruneable_heads_and_indices: only for prune_heads
                setattr(modeling_utils, name, type(name, (_Missing,), {}))
            moved.append(name)
    if moved:
        notes.append(f"transformers.modeling_utils given {', '.join(moved)} (pytorch_utils' or, for the unused "
                     f"head pruning, a stub)")


def build_official_qks(root: Path, device, images, targets, amp: bool, label_table, tmp) -> Official:
    notes: list[str] = ["CLIP ViT-B/16 built from the architecture with random weights (models/clip load() replaced: "
                        "no download)", "BertConfig.from_pretrained('bert-base-uncased') -> BertConfig() (no Hub)",
                        "text-feature caches written beforehand (train: the kit's label table)"]
    if importlib.util.find_spec("pkg_resources") is None:
        import packaging.version
        module = types.ModuleType("pkg_resources")
        module.packaging = packaging
        sys.modules["pkg_resources"] = module
        notes.append("pkg_resources (not installed) given as a module holding packaging (a version check)")
    _patch_transformers_names(notes)
    sys.path.insert(0, str(root))
    _bare_package("models", root / "models")
    _bare_package("lib", root / "lib")
    clip_model_module = importlib.import_module("models.clip.model")
    clip_module = importlib.import_module("models.clip.clip")
    bert_utils = importlib.import_module("models.utils")
    _transformers4_compat(bert_utils, notes)
    importlib.import_module("models.qks")
    factory = importlib.import_module("models.factory")
    lib_utils = importlib.import_module("lib.utils")
    bert_utils.BertConfig.from_pretrained = classmethod(lambda cls, *a, **k: cls())
    clip_module.load = lambda name, device=device, jit=False, download_root=None: (
        _random_clip(clip_model_module, device)[0], None)
    seen = label_table.cpu().numpy().astype(np.float32)
    unseen = np.random.default_rng(0).standard_normal((81, seen.shape[1])).astype(np.float32)
    np.save(tmp / "train_text_features.npy", seen)
    np.save(tmp / "test_text_features.npy", np.concatenate([seen, unseen]))
    cfg = argparse.Namespace(model="qks", arch="vit_b_16", num_hidden_layers=7, num_query_tokens=12, rmcls=False,
                             prompt_template_path=str(root / "data" / "prompt_templates.txt"),
                             train_text_feat_path=str(tmp / "train_text_features.npy"),
                             test_text_feat_path=str(tmp / "test_text_features.npy"),
                             loss="asl", gamma_neg=4.0, gamma_pos=0.0, clip=0.0, optimizer="AdamW", lr=1e-5,
                             weight_decay=1e-4, amp=amp, bb_eval=False)
    torch.manual_seed(1)
    with official_device_calls(device):
        model = factory.create_model("qks", cfg=cfg).to(device)
    model.train_text_features = model.train_text_features.to(device)
    model.test_text_features = model.test_text_features.to(device)
    loss_fn = lib_utils.get_loss_fn(cfg)
    optimizer = lib_utils.get_optimizer(model.parameters(), cfg)
    model.train()
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")
    n_seen = seen.shape[0]

    def step():                              # train.py Trainer.train: only the forward under autocast
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp and device.type == "cuda"):
            ret = model(images)
        loss = loss_fn(ret["logits"], targets)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()
    return Official(model, step, lambda: model(images)["logits"][:, :n_seen], optimizer,
                    "fp16" if amp else "fp32", notes, {"benchmark": False, "deterministic": True})


BUILDERS = {"q2l": build_official_q2l, "salgl": build_official_salgl, "sgre": build_official_sgre,
            "mkt": build_official_mkt, "qks": build_official_qks}


# ------------------------------------------------------------------------------------------------- the kit
def build_kit(method: str, classes: int):
    """The kit's method at its paper config with random weights (as train_step.py), and its method params."""
    params = load_params(ROOT / PAPER_CONFIGS[method])
    mp = params.methods[method]
    torch.manual_seed(0)
    return untrained_method(mp, classes), mp


def share_weights(official: Official, method, mp, classes: int):
    """Load the official model's weights into the kit's with the kit's official-checkpoint converter;
    returns (method rebuilt around the loaded model, note)."""
    from mlc.core.registry import official_format
    model = method.model
    sd = {k: v.detach().cpu() for k, v in official.model.state_dict().items()}
    try:
        converted = official_format(mp.model_name).convert(sd, model)
        mine = model.state_dict()
        result = model.load_state_dict({k: v.to(dtype=mine[k].dtype) if k in mine else v
                                        for k, v in converted.items()}, strict=False)
    except Exception as e:                      # a mismatch: independent random weights (noted)
        return method, f"independent random weights (conversion failed: {type(e).__name__}: {e})"[:300]
    note = "shared (official weights converted into the kit model)"
    if result.missing_keys or result.unexpected_keys:
        note += f"; missing {len(result.missing_keys)} {result.missing_keys[:4]}, unexpected " \
                f"{len(result.unexpected_keys)} {result.unexpected_keys[:4]}"
    cfg = getattr(model, "cfg", None)
    if cfg is not None and dataclasses.is_dataclass(cfg):     # e.g. MKT's teacher: a copy of the loaded encoder
        method = build_method(dataclasses.replace(mp, model=cfg), classes, model=model)
    return method, note


def kit_step(method, mp, device, amp: str, images, targets):
    """The engine loop's step at the params' switches with ``amp``; returns (step, optimizer, autocast)."""
    tp = mp.train
    model = method.model.to(device).train()
    if tp.channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = make_adamw(build_param_groups(model, tp), tp, device)
    autocast = Autocast(device, amp)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast.dtype == torch.float16)
    net = torch.compile(model) if tp.compile else model

    def step():
        with autocast():
            out = method.forward_fn(net, images, targets)
            loss = method.loss_fn(out, targets)["loss"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()
    return step, optimizer, autocast


# ------------------------------------------------------------------------------------------------ measuring
def _precision(dtype) -> str:
    return str(dtype).removeprefix("torch.").replace("float16", "fp16").replace("bfloat16", "bf16") if dtype \
        else "fp32"


def _count(params) -> int:
    return sum(p.numel() for p in params)


def official_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(method_name: str, root: Path, device: torch.device, batch: int, steps: int, warmup: int,
            official_amp: str, check_outputs: bool) -> dict:
    params = load_params(ROOT / PAPER_CONFIGS[method_name])
    mp = params.methods[method_name]
    classes = DATASET_CLASSES[params.data.source]
    size = mp.input.image_size
    images, targets = synthetic_batch(batch, size, classes, device)
    # the same labels in each side's convention: the official open-vocabulary code reads NUS-WIDE as +1 / -1
    # (0 unknown), the kit's manifests as 1 / 0 (-1 unknown)
    official_targets = targets * 2 - 1 if method_name in ("mkt", "qks") else targets
    amp_official = device.type == "cuda" and (OFFICIAL_CUDA_AMP[method_name] if official_amp == "readme"
                                              else official_amp) == "fp16"
    kit_modes = {"users": mp.train.amp, "same": "fp16" if amp_official else "none"}
    same_is_users = resolve_amp(kit_modes["users"], device) == resolve_amp(kit_modes["same"], device)

    t0 = time.perf_counter()
    kits = {mode: build_kit(method_name, classes)[0] for mode in (["users"] if same_is_users else kit_modes)}
    label_table = kits["users"].model.label_embeddings if hasattr(kits["users"].model, "label_embeddings") \
        else torch.randn(classes, 768)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(1)
        official = BUILDERS[method_name](root, device, images, official_targets, amp_official,
                                         label_table.detach().float().cpu(), Path(tmp))
    build_seconds = time.perf_counter() - t0
    if method_name == "q2l":                           # frozen BN: the batch's statistics (else NaN losses)
        with official_device_calls(device):
            _calibrate_by_name(official.model, lambda: official.model(images[:8]))
    weights = {}
    for mode in list(kits):
        kits[mode], weights[mode] = share_weights(official, kits[mode], mp, classes)
        if method_name == "q2l" and not weights[mode].startswith("shared"):
            model = kits[mode].model.to(device)
            calibrate_frozen_batchnorm(model, lambda: kits[mode].forward_fn(model, images[:8], targets[:8]))

    steps_fn = {"official": official.step}
    optimizers = {"official": official.optimizer}
    autocasts = {}
    for mode, method in kits.items():
        steps_fn[f"kit_{mode}"], optimizers[f"kit_{mode}"], autocasts[mode] = kit_step(
            method, mp, device, kit_modes[mode], images, targets)

    row = {"method": method_name, "official_repo": REPOS[method_name], "official_root": str(root),
           "official_commit": official_commit(root), "params_file": PAPER_CONFIGS[method_name],
           "device": device.type, "threads": torch.get_num_threads(), "batch": batch, "image_size": size,
           "classes": classes, "warmup": warmup, "steps": steps, "build_seconds": round(build_seconds, 1),
           "official_precision": official.precision,
           "kit_users_precision": _precision(autocasts["users"].dtype),
           "kit_same_precision": _precision(autocasts.get("same", autocasts["users"]).dtype),
           "same_precision_is_users": same_is_users, "weights": weights["users"],
           "official_patches": official.notes}

    if check_outputs:
        diffs = []
        for mode, method in kits.items():
            method.model.eval()
            official.model.eval()
            with torch.no_grad(), official_device_calls(device):
                theirs = official.logits().float()
                mine = method.forward_fn(method.model, images, targets)["logits"].float()
            diffs.append((theirs - mine).abs().max().item() if theirs.shape == mine.shape else float("nan"))
            row["official_logit_scale"] = round(theirs.abs().max().item(), 4)
            method.model.train()
            official.model.train()
        row["max_abs_logit_diff"] = max(diffs)

    cudnn_kit = {"benchmark": mp.train.cudnn_benchmark, "deterministic": False}
    times: dict[str, list[float]] = {name: [] for name in steps_fn}
    losses: dict[str, float] = {}
    order = list(steps_fn)
    for i in range(warmup + steps):
        for name in (order if i % 2 == 0 else order[::-1]):       # alternate, and alternate the order
            if device.type == "cuda":
                flags = official.cudnn if name == "official" else cudnn_kit
                torch.backends.cudnn.benchmark = flags["benchmark"]
                torch.backends.cudnn.deterministic = flags["deterministic"]
            _sync(device)
            t0 = time.perf_counter()
            if name == "official":
                with official_device_calls(device):
                    loss = steps_fn[name]()
            else:
                loss = steps_fn[name]()
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
            losses[name] = float(loss)

    if _CUDA_CALLS[0]:
        official.notes.append(f"Tensor.cuda() returned the CPU tensor ({_CUDA_CALLS[0]} calls in the run)")
    unused = OFFICIAL_UNUSED.get(method_name)
    official_params = dict(official.model.named_parameters())
    official_unused = _count(p for n, p in official_params.items() if unused and re.search(unused, n))
    row["params"] = {
        "official_total": _count(official_params.values()), "official_unused_by_forward": official_unused,
        "official_used": _count(official_params.values()) - official_unused,
        "kit_total": _count(kits["users"].model.parameters()),
        "official_got_gradient": _count(p for p in official_params.values() if p.grad is not None),
        "kit_got_gradient": _count(p for p in kits["users"].model.parameters() if p.grad is not None),
        "official_optimised": _count(p for g in official.optimizer.param_groups for p in g["params"]
                                     if p.requires_grad),
        "kit_optimised": _count(p for g in optimizers["kit_users"].param_groups for p in g["params"])}
    pc = row["params"]
    row["params_match"] = (pc["official_used"] == pc["kit_total"]
                           and pc["official_got_gradient"] == pc["kit_got_gradient"])
    row["losses"] = {k: round(v, 5) for k, v in losses.items()}
    row["losses_finite"] = all(np.isfinite(v) for v in losses.values())
    row["seconds"] = {k: [round(t, 4) for t in v] for k, v in times.items()}
    medians = {k: statistics.median(v) for k, v in times.items() if v}
    row["official_s_per_step"] = round(medians["official"], 4)
    row["kit_users_s_per_step"] = round(medians["kit_users"], 4)
    row["kit_same_s_per_step"] = round(medians.get("kit_same", medians["kit_users"]), 4)
    row["ratio_users"] = round(medians["official"] / medians["kit_users"], 3)
    row["ratio_same_precision"] = round(medians["official"] / medians.get("kit_same", medians["kit_users"]), 3)
    if method_name in CLOSED_SET:
        row["goal"] = GOALS.get(device.type)
        row["meets_goal"] = row["ratio_users"] >= row["goal"] and row["ratio_same_precision"] >= row["goal"]
    return row


def _calibrate_by_name(model: torch.nn.Module, forward) -> int:
    """train_step.calibrate_frozen_batchnorm for any module class named FrozenBatchNorm2d (Q2L has its own)."""
    def set_stats(module, args):
        x = args[0].float()
        module.running_mean.copy_(x.mean((0, 2, 3)))
        module.running_var.copy_(x.var((0, 2, 3)))
    hooks = [m.register_forward_pre_hook(set_stats) for m in model.modules()
             if type(m).__name__ == "FrozenBatchNorm2d"]
    with torch.no_grad():
        forward()
    for h in hooks:
        h.remove()
    return len(hooks)


# ------------------------------------------------------------------------------------------- results, driver
def write_row(path: Path, row: dict, info: dict) -> None:
    """Merge ``row`` into the results file (one row per method: a new run of a method replaces its row)."""
    data = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    rows = [r for r in data.get("rows", []) if r.get("method") != row["method"]] + [row]
    rows.sort(key=lambda r: METHODS.index(r["method"]) if r["method"] in METHODS else 99)
    path.write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")


def machine_info(device: torch.device, threads: int) -> dict:
    kit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "lib"], capture_output=True,
                           text=True).stdout.strip()
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "cpu_model": cpu_model(), "cpu_count": len(__import__("os").sched_getaffinity(0)),
            "torch": torch.__version__, "python": platform.python_version(), "threads": threads,
            "kit_commit": (kit.stdout.strip() or "unknown") + (" + uncommitted changes in lib/" if dirty else ""),
            "date": time.strftime("%Y-%m-%d"),
            "ratio": "official seconds per step / kit seconds per step (> 1: the kit is faster)",
            "goals": "issue 24: closed-set methods (q2l, salgl, sgre) >= 1.2x on the 2-core CPU, >= 1.5x on a GPU"}


def print_table(rows: list[dict]) -> None:
    print(f"\n{'method':6} {'official':>9} {'kit same':>9} {'kit users':>9} {'x same':>7} {'x users':>7} "
          f"{'prec off/same/users':22} {'params used off/kit (M)':>24} {'graded off/kit (M)':>19} {'|dlogit|':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['method']:6} ERROR {r['error'][:150]}")
            continue
        p = r["params"]
        precision = f"{r['official_precision']}/{r['kit_same_precision']}/{r['kit_users_precision']}"
        print(f"{r['method']:6} {r['official_s_per_step']:9.3f} {r['kit_same_s_per_step']:9.3f} "
              f"{r['kit_users_s_per_step']:9.3f} {r['ratio_same_precision']:6.2f}x {r['ratio_users']:6.2f}x "
              f"{precision:22} {p['official_used'] / 1e6:11.2f}/{p['kit_total'] / 1e6:<12.2f} "
              f"{p['official_got_gradient'] / 1e6:9.2f}/{p['kit_got_gradient'] / 1e6:<9.2f} "
              f"{r.get('max_abs_logit_diff', float('nan')):9.2e}")


def official_dir(root: Path, method: str) -> Path:
    for name in FOLDERS[method]:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"{root}: no checkout of {REPOS[method]} for {method} (a folder named "
                            f"{' or '.join(FOLDERS[method])})")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official-root", required=True, type=Path,
                    help="the official checkout (with --method all: a folder of one checkout per method)")
    ap.add_argument("--method", required=True, choices=(*METHODS, "all"))
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the CUDA path is untested)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="timed steps of each side")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps of each side first")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads, both sides")
    ap.add_argument("--official-amp", default="readme", choices=("readme", "fp16", "none"),
                    help="the official precision on CUDA (readme: what its README command runs)")
    ap.add_argument("--no-check-outputs", action="store_true", help="skip the eval-mode logit comparison")
    ap.add_argument("--json", type=Path, default=None,
                    help="results file (default benchmarks/results_vs_official_<device>.json); rows are merged")
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    device = torch.device(args.device)
    out = args.json or ROOT / "benchmarks" / f"results_vs_official_{device.type}.json"
    if args.method == "all":                          # one process per method: the repositories share names
        for method in METHODS:
            try:
                root = official_dir(args.official_root, method)
            except FileNotFoundError as e:
                write_row(out, {"method": method, "error": str(e)}, machine_info(device, args.threads))
                print(e, flush=True)
                continue
            cmd = [sys.executable, str(Path(__file__).resolve()), "--official-root", str(root), "--method", method,
                   "--device", args.device, "--batch", str(args.batch), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--threads", str(args.threads), "--official-amp", args.official_amp,
                   "--json", str(out)] + (["--no-check-outputs"] if args.no_check_outputs else [])
            subprocess.run(cmd, check=False)
        print_table(json.loads(out.read_text())["rows"])
        return
    torch.set_num_threads(args.threads)
    info = machine_info(device, args.threads)
    try:
        row = measure(args.method, args.official_root.resolve(), device, args.batch, args.steps, args.warmup,
                      args.official_amp, not args.no_check_outputs)
    except Exception as e:                             # a failing method must not hide the others' rows
        import traceback
        traceback.print_exc()
        row = {"method": args.method, "official_root": str(args.official_root),
               "official_commit": official_commit(args.official_root), "error": f"{type(e).__name__}: {e}"[:800]}
    write_row(out, row, info)
    print(json.dumps({k: v for k, v in row.items() if k not in ("seconds", "official_patches")}), flush=True)
    print_table([row])


if __name__ == "__main__":
    main()
