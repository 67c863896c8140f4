"""Backbone registry: every backbone maps images [B, 3, S, S] to a token grid.

``create_backbone(name, pretrained=..., weights=...)`` returns a module whose forward gives
``(tokens [B, N, D], (H, W))``; when ``has_cls`` is set the first token is a class token and
N = 1 + H W.  Method heads never look at the name of their backbone.

Real backbones load pretrained weights from a local file (``weights=path``) or through their library:
torchvision's URL into the torch-hub cache (hash checked), timm's and transformers' Hugging Face repos into
the hub cache.  Offline (:mod:`mlc.core.online`) nothing is downloaded and a weight that is not cached is an error
saying which file to fetch and where to put it.  :func:`weight_source` says, for ``python -m mlc.weights``,
where each backbone's weights come from and whether they are cached.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mlc.core.online import hf_cached, offline, offline_hint
from mlc.core.registry import BACKBONES
from mlc.core.safe_load import load_torch


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
        BACKBONES.register(name, BackboneSpec(name, fn, num_features, stride, has_cls, description))
        return fn
    return deco


def list_backbones() -> list[str]:
    """Names of every registered backbone."""
    return BACKBONES.names()


def backbone_spec(name: str) -> BackboneSpec:
    """The registered backbone ``name``; an unknown name is a KeyError with a suggestion."""
    return BACKBONES.get(name)


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
def _download_torchvision(url: str) -> dict:
    """torchvision's own download into the torch-hub cache, the hash in its file name checked."""
    return torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True, map_location="cpu",
                                              weights_only=True)


def _torchvision_weights(enum_member, weights: str | None) -> dict:
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise MissingWeightsError(f"pretrained weights not found: {path} (model.backbone_weights)")
        return torch.load(path, map_location="cpu", weights_only=True)
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum_member.url).name
    if not path.is_file() and not offline():
        try:
            return _download_torchvision(enum_member.url)
        except (OSError, RuntimeError) as e:       # no network, a proxy, a hash mismatch
            raise MissingWeightsError(f"could not download {enum_member.url} ({e}).\n  Save it as {path}, or "
                                      f"set model.backbone_weights to the file's path.") from None
    if not path.is_file():
        raise MissingWeightsError(
            f"pretrained weights not found: {path}\n"
            f"  Download {enum_member.url}\n"
            f"  and save it as {path} (or set model.backbone_weights to the file's path).\n"
            + offline_hint("them"))
    return torch.load(path, map_location="cpu", weights_only=True)


def _timm_model(timm_name: str, pretrained: bool, weights: str | None, **kwargs) -> nn.Module:
    import timm
    if not pretrained:
        return timm.create_model(timm_name, pretrained=False, num_classes=0, global_pool="", **kwargs)
    path = weights
    if path is None:
        cfg = timm.models.get_pretrained_cfg(timm_name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        path = hf_cached(hub_id) if hub_id else None
        if path is None and hub_id and not offline():      # timm's own download into the Hugging Face cache
            try:
                return timm.create_model(timm_name, pretrained=True, num_classes=0, global_pool="", **kwargs)
            except (OSError, RuntimeError) as e:           # hub errors are OSErrors; no network, a proxy
                raise MissingWeightsError(f"could not download timm model {timm_name!r} from the Hugging Face hub "
                                          f"({hub_id}): {e}\n  Download the weight file and set "
                                          f"model.backbone_weights.") from None
        if path is None:
            cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
            raise MissingWeightsError(
                f"pretrained weights for timm model {timm_name!r} are not in the local cache ({cache}).\n"
                f"  Download the weight file (Hugging Face repo {hub_id or '?'}) and set model.backbone_weights, or\n"
                + offline_hint("them"))
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
                      "BatchNorm, ImageNet-1k V2 weights (not a paper config: SGRE loads the V1 file)")(
        lambda pretrained=False, weights=None, _d=_depth: _torchvision_resnet(_d, pretrained, weights, False, "V2"))


@register_backbone("tresnet_l", 2432, 32, description="timm tresnet_l.miil_in1k_448 (Q2L TResL-448)")
def _tresnet_l(pretrained=False, weights=None):
    return _timm_model(TIMM_NAMES["tresnet_l"], pretrained, weights)


@register_backbone("tresnet_l_21k", 2048, 32, description="timm tresnet_v2_l.miil_in21k (Q2L TResL-22k-448)")
def _tresnet_l_21k(pretrained=False, weights=None):
    return _timm_model(TIMM_NAMES["tresnet_l_21k"], pretrained, weights)


@register_backbone("swin_large_384", 1536, 32, description="timm swin_large_patch4_window12_384.ms_in22k")
def _swin_large_384(pretrained=False, weights=None):
    return _timm_model(TIMM_NAMES["swin_large_384"], pretrained, weights)


@register_backbone("vit_large_224", 1024, 16, has_cls=True,
                   description="timm vit_large_patch16_224.augreg_in21k_ft_in1k")
def _vit_large_224(pretrained=False, weights=None):
    return _timm_model(TIMM_NAMES["vit_large_224"], pretrained, weights)


# SALGL's ViT-L16 at 448 (its vendored timm forwards img_size: the position embedding is resampled at load)
@register_backbone("vit_large_448", 1024, 16, has_cls=True,
                   description="timm vit_large_patch16_224.augreg_in21k_ft_in1k at 448 px (SALGL ViT-L16 1k)")
def _vit_large_448(pretrained=False, weights=None):
    return _timm_model(TIMM_NAMES["vit_large_448"], pretrained, weights, img_size=448)


@register_backbone("vit_large_448_in21k", 1024, 16, has_cls=True,
                   description="timm vit_large_patch16_224.augreg_in21k at 448 px (SALGL ViT-L16 22k)")
def _vit_large_448_in21k(pretrained=False, weights=None):
    return _timm_model(TIMM_NAMES["vit_large_448_in21k"], pretrained, weights, img_size=448)


# ------------------------------------------------------------------------------------------------
# CvT (Q2L's best model): not in timm; transformers' CvtModel with the official activation
# ------------------------------------------------------------------------------------------------
class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the MLP activation of Microsoft's CvT (``get_cls_model(act_layer=QuickGELU)``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x * torch.sigmoid(1.702 * x)


# Microsoft CvT key (relative to one stage / block) -> transformers CvtModel key
_CVT_PROJ = "attention.attention.convolution_projection_{}.convolution_projection."
_CVT_BLOCK_RULES = [
    (r"norm1\.", "layernorm_before."), (r"norm2\.", "layernorm_after."),
    *[(rf"attn\.conv_proj_{q}\.conv\.", _CVT_PROJ.format(name) + "convolution.")
      for q, name in (("q", "query"), ("k", "key"), ("v", "value"))],
    *[(rf"attn\.conv_proj_{q}\.bn\.", _CVT_PROJ.format(name) + "normalization.")
      for q, name in (("q", "query"), ("k", "key"), ("v", "value"))],
    (r"attn\.proj_q\.", "attention.attention.projection_query."),
    (r"attn\.proj_k\.", "attention.attention.projection_key."),
    (r"attn\.proj_v\.", "attention.attention.projection_value."),
    (r"attn\.proj\.", "attention.output.dense."),
    (r"mlp\.fc1\.", "intermediate.dense."), (r"mlp\.fc2\.", "output.dense."),
]


def convert_official_cvt(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Microsoft CvT keys (``stage{i}.patch_embed.*``, ``stage{i}.cls_token``, ``stage{i}.blocks.{j}.*``,
    ``norm.*``; the classifier ``head.*`` dropped) -> :class:`CvtBody` keys (``cvt.encoder.stages...``, ``norm``)."""
    import re
    out = {}
    for key, value in state.items():
        if key.startswith("head."):
            continue
        m = re.match(r"stage(\d+)\.(.*)$", key)
        if key.startswith("norm."):
            out[key] = value
        elif m and m.group(2) == "cls_token":
            out[f"cvt.encoder.stages.{m.group(1)}.cls_token"] = value
        elif m and m.group(2).startswith("patch_embed."):
            rest = m.group(2)[len("patch_embed."):].replace("proj.", "projection.").replace("norm.", "normalization.")
            out[f"cvt.encoder.stages.{m.group(1)}.embedding.convolution_embeddings.{rest}"] = value
        elif m and (b := re.match(r"blocks\.(\d+)\.(.*)$", m.group(2))):
            for pattern, repl in _CVT_BLOCK_RULES:
                new, n = re.subn("^" + pattern, repl, b.group(2))
                if n:
                    out[f"cvt.encoder.stages.{m.group(1)}.layers.{b.group(1)}.{new}"] = value
                    break
            else:
                raise KeyError(f"official CvT key {key!r} has no kit equivalent")
        else:
            raise KeyError(f"official CvT key {key!r} has no kit equivalent")
    return out


CVT_W24_HUB = "microsoft/cvt-w24-384-22k"     # Microsoft's CvT-w24 ImageNet-22k weights, 384 px
CVT_W24 = dict(embed_dim=[192, 768, 1024], depth=[2, 2, 20], num_heads=[3, 12, 16], cls_token=[False, False, True],
               drop_path_rate=[0.0, 0.0, 0.3])


class CvtBody(nn.Module):
    """transformers' CvtModel -> the last stage's map [B, D, H, W] (CLS token split off) -> LayerNorm over D:
    the feature map Q2L takes from Microsoft's CvT (``forward_features`` with ``cls_token`` off).  The MLPs use
    QuickGELU, as Microsoft's CvT (transformers' port builds ``nn.GELU``, which changes every output)."""

    def __init__(self, **config):
        super().__init__()
        from transformers import CvtConfig, CvtModel
        cfg = CvtConfig(**config)
        self.cvt = CvtModel(cfg, add_pooling_layer=False)
        for stage in self.cvt.encoder.stages:
            for layer in stage.layers:
                layer.intermediate.activation = QuickGELU()
        self.norm = nn.LayerNorm(cfg.embed_dim[-1], eps=1e-5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, S, S] -> the normalised last-stage map [B, D, S/16, S/16]."""
        feats = self.cvt(pixel_values=images).last_hidden_state          # [B, D, H, W]
        return self.norm(feats.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def official_key_filter(self, state: dict[str, torch.Tensor], _model=None) -> dict[str, torch.Tensor]:
        """Official keys (Microsoft's layout, as inside Q2L's checkpoints) -> this module's."""
        return convert_official_cvt(state)


def _cvt_w24(pretrained: bool, weights: str | None) -> CvtBody:
    body = CvtBody(**CVT_W24)
    if not pretrained:
        return body
    if weights is not None:                          # Microsoft's CvT-w24-384x384-IN-22k.pth (Q2L's get_model_path)
        if not Path(weights).is_file():
            raise MissingWeightsError(f"pretrained weights not found: {weights}")
        state = load_torch(weights, map_location="cpu")
        state = state.get("state_dict", state.get("model", state))
        missing, unexpected = body.load_state_dict(convert_official_cvt(state), strict=False)
        if unexpected or [k for k in missing if not k.endswith("num_batches_tracked")]:
            raise RuntimeError(f"{weights}: not a CvT-w24 checkpoint (missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]})")
        return body
    from transformers import CvtForImageClassification
    try:
        hf = CvtForImageClassification.from_pretrained(CVT_W24_HUB, local_files_only=offline())
    except OSError as e:
        raise MissingWeightsError(
            f"pretrained weights for CvT-w24 ({CVT_W24_HUB}) are not in the Hugging Face cache and could not be "
            f"downloaded ({e.__class__.__name__}); or set model.backbone_weights to Microsoft's "
            f"CvT-w24-384x384-IN-22k.pth.\n" + offline_hint("them")) from None
    body.cvt.load_state_dict(hf.cvt.state_dict())
    body.norm.load_state_dict(hf.layernorm.state_dict())
    return body


register_backbone("cvt_w24_384", 1024, 16, description="CvT-w24 (ImageNet-22k, 384), transformers CvtModel with "
                  "Microsoft's QuickGELU, final LayerNorm (Q2L-CvT_w24-384)")(_cvt_w24)


# ------------------------------------------------------------------------------------------------
# Where each backbone's pretrained weights come from (python -m mlc.weights)
# ------------------------------------------------------------------------------------------------
TIMM_NAMES = {"tresnet_l": "tresnet_l.miil_in1k_448", "tresnet_l_21k": "tresnet_v2_l.miil_in21k",
              "swin_large_384": "swin_large_patch4_window12_384.ms_in22k",
              "vit_large_224": "vit_large_patch16_224.augreg_in21k_ft_in1k",
              "vit_large_448": "vit_large_patch16_224.augreg_in21k_ft_in1k",
              "vit_large_448_in21k": "vit_large_patch16_224.augreg_in21k"}


@dataclass(frozen=True)
class WeightSource:
    """A pretrained weight: the library that downloads it, from where, and the cached file if there is one."""
    library: str
    source: str                      # a URL or a Hugging Face repo id
    cached: str | None               # the file in the library's cache, or None
    fetch: Callable[[], object]      # downloads through the library into its cache


def _torchvision_enum(name: str):
    import torchvision
    depth = int(name.removeprefix("resnet").split("_")[0])
    version = "V2" if name.endswith("_v2") else "V1"
    return getattr(getattr(torchvision.models, f"ResNet{depth}_Weights"), f"IMAGENET1K_{version}")


def weight_source(name: str) -> WeightSource | None:
    """Where backbone ``name``'s pretrained weights come from; None for a backbone without published weights."""
    backbone_spec(name)
    if name.startswith("resnet"):
        enum = _torchvision_enum(name)
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
        return WeightSource("torchvision", enum.url, str(path) if path.is_file() else None,
                            lambda: _download_torchvision(enum.url))
    if name in TIMM_NAMES:
        import timm
        hub_id = timm.models.get_pretrained_cfg(TIMM_NAMES[name]).hf_hub_id
        return WeightSource("timm", f"https://huggingface.co/{hub_id}", hf_cached(hub_id),
                            lambda: timm.create_model(TIMM_NAMES[name], pretrained=True))
    if name in ("toy_cnn", "toy_cnn_frozen_bn"):   # shipped with the kit; regenerated, not downloaded
        def regenerate():
            raise MissingWeightsError(f"{TOY_CNN_WEIGHTS} is missing from the kit: regenerate it with "
                                      f"{TOY_CNN_COMMAND}")
        return WeightSource("mlc-kit", TOY_CNN_COMMAND, str(TOY_CNN_WEIGHTS) if TOY_CNN_WEIGHTS.is_file() else None,
                            regenerate)
    if name == "cvt_w24_384":
        def fetch():
            from transformers import CvtForImageClassification
            return CvtForImageClassification.from_pretrained(CVT_W24_HUB)
        return WeightSource("transformers", f"https://huggingface.co/{CVT_W24_HUB}", hf_cached(CVT_W24_HUB), fetch)
    return None


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


# The toy "ImageNet" weights the kit ships, as torchvision's ImageNet file arrives by download: toy_cnn
# pretrained on single objects (mlc.data.toy_imagenet) by ``python -m mlc.runs.toy_backbone``, which regenerates
# them; their provenance (command, seed, commit, held-out accuracy, CPU) is the .json beside them.
TOY_CNN_WEIGHTS = Path(__file__).parent / "toy_weights" / "toy_cnn_imagenet.pt"
TOY_CNN_COMMAND = "python -m mlc.runs.toy_backbone"


def load_toy_cnn_state(net: nn.Module, path: str | os.PathLike) -> None:
    """Load a toy_cnn state dict (keys as the toy_cnn Sequential names them; fp16 or fp32, loaded as fp32) into
    ``net``.  A file for another architecture or width is a ValueError naming the file and the keys at fault."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"pretrained weights not found: {path} (model.backbone_weights)"
                                  + (f"; regenerate them with {TOY_CNN_COMMAND}" if path == TOY_CNN_WEIGHTS else ""))
    state = load_torch(path, map_location="cpu")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a toy_cnn state dict (a dict of tensors keyed as the toy_cnn Sequential: "
                         f"'0.weight', '3.conv1.weight', ...); found {type(state).__name__}"
                         + (f" with keys {list(state)[:5]}" if isinstance(state, dict) else ""))
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)} (toy_cnn: {list(v.shape)})" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{path}: not weights for toy_cnn (128 channels, stride 8): "
                         + "; ".join(f"{what} {items[:4]}{' ...' if len(items) > 4 else ''}"
                                     for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                                         ("wrong shapes", wrong)) if items)
                         + ". Pass the state dict of the toy_cnn Sequential (the backbone alone, no classifier).")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


@register_backbone("toy_cnn", 128, 8, description="small residual CNN for the toy world (stride 8, 128 channels); "
                   "pretrained: the toy ImageNet weights shipped with the kit")
def _toy_cnn(pretrained=False, weights=None):
    net = toy_cnn()
    if pretrained:
        load_toy_cnn_state(net, TOY_CNN_WEIGHTS if weights is None else weights)
    return net


def freeze_batchnorm(net: nn.Module) -> nn.Module:
    """Every BatchNorm2d of ``net`` replaced by torchvision's FrozenBatchNorm2d holding the same statistics and
    affine parameters (the same state-dict keys): what Query2Label does to its ImageNet ResNet."""
    from torchvision.ops.misc import FrozenBatchNorm2d
    for name, child in net.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(net, name, frozen)
        else:
            freeze_batchnorm(child)
    return net


@register_backbone("toy_cnn_frozen_bn", 128, 8, description="toy_cnn with frozen BatchNorm, as Query2Label freezes "
                   "its ResNet's: pretrained, the statistics of the toy ImageNet")
def _toy_cnn_frozen_bn(pretrained=False, weights=None):
    return freeze_batchnorm(_toy_cnn(pretrained, weights))
