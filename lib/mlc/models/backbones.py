"""Backbone registry: every backbone maps images [B, 3, S, S] to a token grid.

``create_backbone(name, pretrained=..., weights=...)`` returns a module whose forward gives
``(tokens [B, N, D], (H, W))``; when ``has_cls`` is set the first token is a class token and
N = 1 + H W.  Method heads never look at the name of their backbone.

Real backbones load pretrained weights from a local file (``weights=path``) or from the local
torch-hub / Hugging Face cache; nothing is downloaded at run time.  When the weights are not there,
the error says which file to fetch and where to put it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..suggest import did_you_mean

_REGISTRY: dict[str, "BackboneSpec"] = {}


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights were asked for but are not available offline."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[..., nn.Module]
    num_features: int
    stride: int
    has_cls: bool = False
    description: str = ""


def register_backbone(name: str, num_features: int, stride: int, has_cls: bool = False, description: str = ""):
    """Register ``fn(pretrained, weights) -> nn.Module`` as backbone ``name`` with its width and stride."""
    def deco(fn):
        if name in _REGISTRY:
            raise KeyError(f"backbone {name!r} registered twice")
        _REGISTRY[name] = BackboneSpec(name, fn, num_features, stride, has_cls, description)
        return fn
    return deco


def list_backbones() -> list[str]:
    """Names of every registered backbone."""
    return sorted(_REGISTRY)


def backbone_spec(name: str) -> BackboneSpec:
    """The registered backbone ``name``; an unknown name is a KeyError with a suggestion."""
    if name not in _REGISTRY:
        hint = did_you_mean(name, _REGISTRY, 3)
        raise KeyError(f"unknown backbone {name!r}{hint}; known: {', '.join(list_backbones())}")
    return _REGISTRY[name]


def create_backbone(name: str, pretrained: bool = False, weights: str | None = None, **kwargs) -> "Backbone":
    """Build a registered backbone.  ``weights``: a local weight file (implies pretrained)."""
    spec = backbone_spec(name)
    module = spec.build(pretrained=pretrained or weights is not None, weights=weights, **kwargs)
    return Backbone(module, spec)


class Backbone(nn.Module):
    """Wraps a feature extractor ``body`` and turns its output into tokens [B, N, D]."""

    def __init__(self, body: nn.Module, spec: BackboneSpec):
        super().__init__()
        self.body = body
        self.name, self.num_features = spec.name, spec.num_features
        self.stride, self.has_cls = spec.stride, spec.has_cls

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Images [B, 3, S, S] -> (tokens [B, N, D], grid (h, w))."""
        feats = self.body(images)
        if isinstance(feats, dict):          # torchvision IntermediateLayerGetter
            feats = feats["out"]
        if feats.ndim == 4:
            if feats.shape[1] == self.num_features:   # NCHW (CNNs)
                b, d, h, w = feats.shape
                return feats.flatten(2).transpose(1, 2), (h, w)
            b, h, w, d = feats.shape                   # NHWC (Swin)
            return feats.reshape(b, h * w, d), (h, w)
        # [B, (1+)N, D] sequences (ViT): the grid comes from the input size
        h, w = images.shape[-2] // self.stride, images.shape[-1] // self.stride
        return feats, (h, w)


# ------------------------------------------------------------------------------------------------
# Offline weight resolution
# ------------------------------------------------------------------------------------------------
def _torchvision_weights(enum_member, weights: str | None) -> dict:
    if weights is not None:
        path = Path(weights)
    else:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum_member.url).name
    if not path.is_file():
        raise MissingWeightsError(
            f"pretrained weights not found: {path}\n"
            f"  Download {enum_member.url}\n"
            f"  and save it as {Path(torch.hub.get_dir()) / 'checkpoints' / Path(enum_member.url).name}"
            f" (or set model.backbone_weights to the file's path).")
    return torch.load(path, map_location="cpu", weights_only=True)


def _timm_model(timm_name: str, pretrained: bool, weights: str | None, **kwargs) -> nn.Module:
    import timm
    if not pretrained:
        return timm.create_model(timm_name, pretrained=False, num_classes=0, global_pool="", **kwargs)
    path = weights
    if path is None:
        cfg = timm.models.get_pretrained_cfg(timm_name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if hub_id:
            from huggingface_hub import hf_hub_download
            for filename in ("model.safetensors", "pytorch_model.bin"):
                try:
                    path = hf_hub_download(hub_id, filename, local_files_only=True)
                    break
                except Exception:
                    continue
        if path is None:
            cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
            raise MissingWeightsError(
                f"pretrained weights for timm model {timm_name!r} are not in the local cache ({cache}).\n"
                f"  On a machine with internet: python -c \"import timm; timm.create_model('{timm_name}', "
                f"pretrained=True)\" and copy the cache,\n"
                f"  or download the weight file (Hugging Face repo {hub_id or '?'}) and set model.backbone_weights.")
    if not Path(path).is_file():
        raise MissingWeightsError(f"pretrained weights not found: {path}")
    return timm.create_model(timm_name, pretrained=True, num_classes=0, global_pool="",
                             pretrained_cfg_overlay={"file": str(path)}, **kwargs)


# ------------------------------------------------------------------------------------------------
# Real backbones
# ------------------------------------------------------------------------------------------------
def _torchvision_resnet(depth: int, pretrained: bool, weights: str | None, frozen_bn: bool = True,
                        version: str = "V1") -> nn.Module:
    """torchvision ResNet, layer4 output.  Frozen BatchNorm: Query2Label; ordinary BatchNorm: SALGL, SGRE."""
    import torchvision
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.ops.misc import FrozenBatchNorm2d
    ctor = getattr(torchvision.models, f"resnet{depth}")
    enum = getattr(getattr(torchvision.models, f"ResNet{depth}_Weights"), f"IMAGENET1K_{version}")
    net = ctor(weights=None, norm_layer=FrozenBatchNorm2d if frozen_bn else None)
    if pretrained:
        state = _torchvision_weights(enum, weights)
        net.load_state_dict(state)  # BatchNorm fills in num_batches_tracked missing from old files
    return IntermediateLayerGetter(net, return_layers={"layer4": "out"})


for _depth, _dim in ((18, 512), (34, 512), (50, 2048), (101, 2048)):
    register_backbone(f"resnet{_depth}", _dim, 32, description=f"torchvision ResNet-{_depth}, frozen BatchNorm, "
                      "ImageNet-1k V1 weights (Query2Label)")(
        lambda pretrained=False, weights=None, _d=_depth: _torchvision_resnet(_d, pretrained, weights))
    register_backbone(f"resnet{_depth}_bn", _dim, 32, description=f"torchvision ResNet-{_depth}, trainable "
                      "BatchNorm, ImageNet-1k V1 weights (SALGL)")(
        lambda pretrained=False, weights=None, _d=_depth: _torchvision_resnet(_d, pretrained, weights, False))
for _depth in (50, 101):
    register_backbone(f"resnet{_depth}_bn_v2", 2048, 32, description=f"torchvision ResNet-{_depth}, trainable "
                      "BatchNorm, ImageNet-1k V2 weights (SGRE)")(
        lambda pretrained=False, weights=None, _d=_depth: _torchvision_resnet(_d, pretrained, weights, False, "V2"))


@register_backbone("tresnet_l", 2432, 32, description="timm tresnet_l.miil_in1k_448 (Q2L TResL-448)")
def _tresnet_l(pretrained=False, weights=None):
    return _timm_model("tresnet_l.miil_in1k_448", pretrained, weights)


@register_backbone("tresnet_l_21k", 2048, 32, description="timm tresnet_v2_l.miil_in21k (Q2L TResL-22k-448)")
def _tresnet_l_21k(pretrained=False, weights=None):
    return _timm_model("tresnet_v2_l.miil_in21k", pretrained, weights)


@register_backbone("swin_large_384", 1536, 32, description="timm swin_large_patch4_window12_384.ms_in22k")
def _swin_large_384(pretrained=False, weights=None):
    return _timm_model("swin_large_patch4_window12_384.ms_in22k", pretrained, weights)


@register_backbone("vit_large_224", 1024, 16, has_cls=True,
                   description="timm vit_large_patch16_224.augreg_in21k_ft_in1k")
def _vit_large_224(pretrained=False, weights=None):
    return _timm_model("vit_large_patch16_224.augreg_in21k_ft_in1k", pretrained, weights)


# ------------------------------------------------------------------------------------------------
# Toy backbones: small CNNs trained from scratch, stride 8 (64 px images give an 8 x 8 grid)
# ------------------------------------------------------------------------------------------------
class _ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity() if (c_in == c_out and stride == 1) else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def toy_cnn(widths=(16, 32, 64, 128)) -> nn.Sequential:
    """Stem at stride 2, then residual stages at strides 2, 2, 1: an 8 x 8 grid for 64 px input."""
    layers = [nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
    strides = (2, 2, 1)
    for c_in, c_out, s in zip(widths[:-1], widths[1:], strides):
        layers.append(_ResidualBlock(c_in, c_out, s))
    return nn.Sequential(*layers)


@register_backbone("toy_cnn", 128, 8, description="small residual CNN for the toy world (stride 8, 128 channels)")
def _toy_cnn(pretrained=False, weights=None):
    net = toy_cnn()
    if pretrained:
        if weights is None:
            raise MissingWeightsError("toy_cnn has no published weights: pass model.backbone_weights or "
                                      "set model.pretrained: false")
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net
