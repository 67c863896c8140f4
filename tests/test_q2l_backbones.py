"""Q2L's non-ResNet backbones from their official layouts inside Q2L's checkpoints (TResNet: ASL's, Swin and
CvT: Microsoft's).  CvT for Q2L's best model (Q2L-CvT_w24-384): transformers' CvtModel loaded from Microsoft's
key layout gives
what Microsoft's CvT computes.

The oracle is built as ../shared/oracles are: random weights in the official key layout, a fixed input, and
the outputs of a faithful forward written here from the official model code (Microsoft CvT ``cls_cvt.py``, as
vendored by Q2L @ 55eb050, read by hand): conv embedding + LayerNorm; per block pre-norm attention whose q / k /
v come from depth-wise conv + BatchNorm projections of the token map (k, v at stride 2, the CLS token passed
through unprojected), scores scaled by dim ** -0.5 (the whole width, not the head width), an MLP with QuickGELU;
the CLS token of the last stage split off; Q2L applies the final LayerNorm to the map.
"""
import pytest
import torch
import torch.nn.functional as F

from mlc.modeling.backbones import CvtBody, QuickGELU, convert_official_cvt

SPEC = dict(embed_dim=[16, 32, 48], depth=[1, 2, 3], num_heads=[1, 2, 3], cls_token=[False, False, True],
            patch_sizes=[7, 3, 3], patch_stride=[4, 2, 2], patch_padding=[2, 1, 1])


def official_keys(spec=SPEC) -> dict[str, tuple]:
    """Microsoft CvT state-dict keys and shapes (``ConvolutionalVisionTransformer`` without the head)."""
    keys, c_in = {}, 3
    for i, (d, depth) in enumerate(zip(spec["embed_dim"], spec["depth"])):
        k = spec["patch_sizes"][i]
        keys[f"stage{i}.patch_embed.proj.weight"] = (d, c_in, k, k)
        keys[f"stage{i}.patch_embed.proj.bias"] = (d,)
        keys[f"stage{i}.patch_embed.norm.weight"] = keys[f"stage{i}.patch_embed.norm.bias"] = (d,)
        if spec["cls_token"][i]:
            keys[f"stage{i}.cls_token"] = (1, 1, d)
        for j in range(depth):
            b = f"stage{i}.blocks.{j}."
            for n in ("norm1", "norm2"):
                keys[b + n + ".weight"] = keys[b + n + ".bias"] = (d,)
            for qkv in "qkv":
                keys[f"{b}attn.conv_proj_{qkv}.conv.weight"] = (d, 1, 3, 3)
                for p in ("weight", "bias", "running_mean", "running_var"):
                    keys[f"{b}attn.conv_proj_{qkv}.bn.{p}"] = (d,)
                keys[f"{b}attn.conv_proj_{qkv}.bn.num_batches_tracked"] = ()
                keys[f"{b}attn.proj_{qkv}.weight"], keys[f"{b}attn.proj_{qkv}.bias"] = (d, d), (d,)
            keys[b + "attn.proj.weight"], keys[b + "attn.proj.bias"] = (d, d), (d,)
            keys[b + "mlp.fc1.weight"], keys[b + "mlp.fc1.bias"] = (4 * d, d), (4 * d,)
            keys[b + "mlp.fc2.weight"], keys[b + "mlp.fc2.bias"] = (d, 4 * d), (d,)
        c_in = d
    keys["norm.weight"] = keys["norm.bias"] = (spec["embed_dim"][-1],)
    return keys


def official_state_dict(seed=1234) -> dict[str, torch.Tensor]:
    """Random weights at O(1) activations: LayerNorm / BN scales near 1, variances positive."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, (key, shape) in enumerate(official_keys().items()):
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.zeros((), dtype=torch.long)
        elif key.endswith("running_var"):
            sd[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith(("norm1.weight", "norm2.weight", "norm.weight", "bn.weight")):
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 10
            sd[key] = torch.randn(shape, generator=g) / fan_in ** 0.5
    return sd


def _layer_norm(x, sd, key):
    return F.layer_norm(x, x.shape[-1:], sd[key + ".weight"], sd[key + ".bias"], 1e-5)


def _conv_bn_tokens(m, sd, key, stride):
    x = F.conv2d(m, sd[key + ".conv.weight"], stride=stride, padding=1, groups=m.shape[1])
    x = F.batch_norm(x, sd[key + ".bn.running_mean"], sd[key + ".bn.running_var"], sd[key + ".bn.weight"],
                     sd[key + ".bn.bias"], training=False, eps=1e-5)
    return x.flatten(2).transpose(1, 2)                                     # [B, h w, C]


def reference_forward(sd, images, spec=SPEC):
    """Microsoft CvT ``forward_features`` with ``cls_token`` off + Q2L's final LayerNorm, written out."""
    x = images
    for i, (d, depth, heads) in enumerate(zip(spec["embed_dim"], spec["depth"], spec["num_heads"])):
        p = f"stage{i}."
        x = F.conv2d(x, sd[p + "patch_embed.proj.weight"], sd[p + "patch_embed.proj.bias"],
                     stride=spec["patch_stride"][i], padding=spec["patch_padding"][i])
        b, c, h, w = x.shape
        t = _layer_norm(x.flatten(2).transpose(1, 2), sd, p + "patch_embed.norm")
        cls = spec["cls_token"][i]
        if cls:
            t = torch.cat([sd[p + "cls_token"].expand(b, -1, -1), t], 1)
        for j in range(depth):
            k = f"{p}blocks.{j}."
            u = _layer_norm(t, sd, k + "norm1")
            tok, u = (u[:, :1], u[:, 1:]) if cls else (None, u)
            m = u.transpose(1, 2).reshape(b, c, h, w)
            q, kk, v = (_conv_bn_tokens(m, sd, f"{k}attn.conv_proj_{n}", s) for n, s in (("q", 1), ("k", 2), ("v", 2)))
            if cls:
                q, kk, v = (torch.cat([tok, z], 1) for z in (q, kk, v))
            q, kk, v = (F.linear(z, sd[f"{k}attn.proj_{n}.weight"], sd[f"{k}attn.proj_{n}.bias"])
                        .reshape(b, z.shape[1], heads, c // heads).transpose(1, 2) for n, z in zip("qkv", (q, kk, v)))
            att = torch.softmax(q @ kk.transpose(-1, -2) * c ** -0.5, -1)
            o = (att @ v).transpose(1, 2).reshape(b, -1, c)
            t = t + F.linear(o, sd[k + "attn.proj.weight"], sd[k + "attn.proj.bias"])
            hdn = F.linear(_layer_norm(t, sd, k + "norm2"), sd[k + "mlp.fc1.weight"], sd[k + "mlp.fc1.bias"])
            hdn = hdn * torch.sigmoid(1.702 * hdn)                               # QuickGELU
            t = t + F.linear(hdn, sd[k + "mlp.fc2.weight"], sd[k + "mlp.fc2.bias"])
        if cls:
            t = t[:, 1:]
        x = t.transpose(1, 2).reshape(b, c, h, w)
    return _layer_norm(x.permute(0, 2, 3, 1), sd, "norm").permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def oracle():
    sd = official_state_dict()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return sd, images, reference_forward(sd, images)


def test_official_cvt_weights_give_the_official_feature_map(oracle):
    sd, images, expected = oracle
    body = CvtBody(**SPEC).eval()
    body.load_state_dict(convert_official_cvt({**sd, "head.weight": torch.zeros(5, 48)}), strict=True)
    with torch.no_grad():
        got = body(images)
    assert got.shape == (2, 48, 4, 4)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_transformers_gelu_would_change_the_outputs(oracle):
    """transformers' CvT port builds nn.GELU; Microsoft's CvT (and its 22k weights) use QuickGELU."""
    sd, images, expected = oracle
    body = CvtBody(**SPEC).eval()
    body.load_state_dict(convert_official_cvt(sd))
    for stage in body.cvt.encoder.stages:
        for layer in stage.layers:
            assert isinstance(layer.intermediate.activation, QuickGELU)
            layer.intermediate.activation = torch.nn.GELU()
    with torch.no_grad():
        assert (body(images) - expected).abs().max() > 1e-3


def test_q2l_checkpoint_backbone_keys_land_on_the_cvt_backbone():
    """Inside Q2L's checkpoint.pkl the CvT sits at ``backbone.0.*`` (no IntermediateLayerGetter)."""
    from mlc.core.registry import BACKBONES
    from mlc.methods.q2l.model import Q2LConfig, Query2Label, _official_q2l
    from mlc.modeling.backbones import register_backbone
    if "cvt_oracle_tiny" not in BACKBONES:
        register_backbone("cvt_oracle_tiny", 48, 16)(lambda pretrained=False, weights=None: CvtBody(**SPEC))
    model = Query2Label(Q2LConfig(backbone="cvt_oracle_tiny", hidden_dim=48, dim_feedforward=64), 5)
    sd = official_state_dict()
    official = {f"module.backbone.0.{k}": v for k, v in sd.items()}
    official.update({"module.fc.W": torch.zeros(1, 5, 48), "module.fc.b": torch.zeros(1, 5)})
    converted = _official_q2l(official, model)
    own = {k for k in model.state_dict() if k.startswith("backbone.")}
    assert {k for k in converted if k.startswith("backbone.")} == own
    torch.testing.assert_close(converted["backbone.body.cvt.encoder.stages.2.cls_token"], sd["stage2.cls_token"])
    torch.testing.assert_close(converted["backbone.body.norm.weight"], sd["norm.weight"])


def test_paper_size_cvt_w24_has_the_official_shape():
    """CvT-w24: widths 192 / 768 / 1024, depths 2 / 2 / 20, stride 16 (a 24 x 24 map at 384 px), 277 M
    parameters without the classifier; the key set is Microsoft's, mapped one to one."""
    from mlc.modeling.backbones import CVT_W24, backbone_spec
    spec = backbone_spec("cvt_w24_384")
    assert (spec.num_features, spec.stride) == (1024, 16)
    with torch.device("meta"):
        body = CvtBody(**CVT_W24)
    full = {**SPEC, **{k: v for k, v in CVT_W24.items() if k in SPEC}}
    official = official_keys(full)
    converted = convert_official_cvt({k: torch.empty(0) for k in official})
    assert set(converted) == set(body.state_dict())
    for key, shape in official.items():
        kit_key = next(iter(convert_official_cvt({key: torch.empty(0)})))
        assert tuple(body.state_dict()[kit_key].shape) == shape, key
    assert 276e6 < sum(p.numel() for p in body.parameters()) < 278e6


def asl_tresnet_keys(layers=(4, 5, 18, 3), width_factor=1.2) -> dict[str, tuple]:
    """ASL's TResNet state-dict keys (what Q2L vendors in lib/models/tresnet/tresnet_sync.py, read by hand):
    conv2d_ABN = Sequential(Conv2d, InPlaceABNSync); a stride-2 BasicBlock conv1 / Bottleneck conv2 is
    Sequential(conv2d_ABN, anti-alias (JIT, no tensors)); the downsample is [AvgPool2d if stride 2, conv2d_ABN];
    SE is fc1 / fc2 1x1 convolutions with bias, on conv1's width in a Bottleneck; no SE in layer4."""
    keys = {}
    planes = inplanes = int(64 * width_factor)

    def abn(prefix, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.{p}"] = (c,)

    keys["body.conv1.0.weight"] = (planes, 48, 3, 3)
    abn("body.conv1.1", planes)
    stages = [(1, layers[0], 1, True, 1), (2, layers[1], 2, True, 1), (4, layers[2], 2, True, 4),
              (8, layers[3], 2, False, 4)]
    for li, (mult, n, stride, se, exp) in enumerate(stages, 1):
        p = planes * mult
        for j in range(n):
            b, s = f"body.layer{li}.{j}", stride if j == 0 else 1
            if exp == 1:
                conv = f"{b}.conv1.0" if s == 1 else f"{b}.conv1.0.0"
                keys[f"{conv}.weight"] = (p, inplanes, 3, 3)
                abn(f"{b}.conv1.1" if s == 1 else f"{b}.conv1.0.1", p)
                keys[f"{b}.conv2.0.weight"] = (p, p, 3, 3)
                abn(f"{b}.conv2.1", p)
                se_c, r = p, max(p // 4, 64)
            else:
                keys[f"{b}.conv1.0.weight"] = (p, inplanes, 1, 1)
                abn(f"{b}.conv1.1", p)
                keys[(f"{b}.conv2.0" if s == 1 else f"{b}.conv2.0.0") + ".weight"] = (p, p, 3, 3)
                abn(f"{b}.conv2.1" if s == 1 else f"{b}.conv2.0.1", p)
                keys[f"{b}.conv3.0.weight"] = (p * 4, p, 1, 1)
                abn(f"{b}.conv3.1", p * 4)
                se_c, r = p, max(p * 4 // 8, 64)
            if se:
                keys[f"{b}.se.fc1.weight"], keys[f"{b}.se.fc1.bias"] = (r, se_c, 1, 1), (r,)
                keys[f"{b}.se.fc2.weight"], keys[f"{b}.se.fc2.bias"] = (se_c, r, 1, 1), (se_c,)
            if j == 0 and (s != 1 or inplanes != p * exp):
                d = f"{b}.downsample.{1 if s == 2 else 0}"
                keys[f"{d}.0.weight"] = (p * exp, inplanes, 1, 1)
                abn(f"{d}.1", p * exp)
            inplanes = p * exp
    return keys


def test_q2l_tresnet_checkpoint_keys_land_on_timms_tresnet_with_inplace_abn_weights():
    """Q2L-TResL-448's checkpoint holds ASL's TResNet at backbone.0.body.body.*; the kit's tresnet_l is timm's.
    Every key lands on a kit key of the same shape, InPlaceABN weights become |w| + 1e-5 BatchNorm weights
    (what InPlaceABN computes with), and BatchNorm's num_batches_tracked (absent from InPlaceABN) is filled."""
    from mlc.methods.q2l.model import Q2LConfig, Query2Label, _official_q2l
    with torch.device("meta"):
        model = Query2Label(Q2LConfig(backbone="tresnet_l", hidden_dim=2432, dim_feedforward=64), 3)
    asl = asl_tresnet_keys()
    g = torch.Generator().manual_seed(0)
    official = {f"module.backbone.0.body.{k}": torch.randn(s, generator=g) for k, s in asl.items()}
    official.update({"module.fc.W": torch.zeros(1, 3, 2432), "module.fc.b": torch.zeros(1, 3)})
    converted = _official_q2l(official, model)
    own = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    got = {k: v for k, v in converted.items() if k.startswith("backbone.")}
    assert set(got) == set(own), (sorted(set(own) - set(got))[:5], sorted(set(got) - set(own))[:5])
    for k, v in got.items():
        assert v.shape == own[k].shape, k
    w = official["module.backbone.0.body.body.conv1.1.weight"]
    torch.testing.assert_close(got["backbone.body.body.conv1.bn.weight"], w.abs() + 1e-5)
    torch.testing.assert_close(got["backbone.body.body.conv1.conv.weight"],
                               official["module.backbone.0.body.body.conv1.0.weight"])


def ms_swin_keys(embed=192, depths=(2, 2, 18, 2), heads=(6, 12, 24, 48), window=12, img=384) -> dict[str, tuple]:
    """Microsoft Swin keys as in Q2L's lib/models/swin_transformer.py (read by hand): persistent
    relative_position_index and attn_mask buffers, downsampling (PatchMerging) at the END of stages 0-2."""
    keys = {"patch_embed.proj.weight": (embed, 3, 4, 4), "patch_embed.proj.bias": (embed,),
            "patch_embed.norm.weight": (embed,), "patch_embed.norm.bias": (embed,)}
    res = img // 4
    for i, (depth, h) in enumerate(zip(depths, heads)):
        c = embed * 2 ** i
        w = min(window, res)
        for j in range(depth):
            b = f"layers.{i}.blocks.{j}."
            for n in ("norm1", "norm2"):
                keys[b + n + ".weight"] = keys[b + n + ".bias"] = (c,)
            keys[b + "attn.relative_position_bias_table"] = ((2 * w - 1) ** 2, h)
            keys[b + "attn.relative_position_index"] = (w * w, w * w)
            keys[b + "attn.qkv.weight"], keys[b + "attn.qkv.bias"] = (3 * c, c), (3 * c,)
            keys[b + "attn.proj.weight"], keys[b + "attn.proj.bias"] = (c, c), (c,)
            keys[b + "mlp.fc1.weight"], keys[b + "mlp.fc1.bias"] = (4 * c, c), (4 * c,)
            keys[b + "mlp.fc2.weight"], keys[b + "mlp.fc2.bias"] = (c, 4 * c), (c,)
            if j % 2 == 1 and res > window:
                keys[b + "attn_mask"] = ((res // w) ** 2, w * w, w * w)
        if i < len(depths) - 1:
            keys[f"layers.{i}.downsample.reduction.weight"] = (2 * c, 4 * c)
            keys[f"layers.{i}.downsample.norm.weight"] = keys[f"layers.{i}.downsample.norm.bias"] = (4 * c,)
            res //= 2
    keys["norm.weight"] = keys["norm.bias"] = (embed * 8,)
    return keys


def test_q2l_swin_checkpoint_keys_land_on_timms_swin():
    """Q2L-SwinL-384's checkpoint holds Microsoft's Swin at backbone.0.*; timm's filter moves the downsampling
    to the start of the next stage and drops the buffers timm recomputes."""
    from mlc.methods.q2l.model import Q2LConfig, Query2Label, _official_q2l
    with torch.device("meta"):
        model = Query2Label(Q2LConfig(backbone="swin_large_384", hidden_dim=1536, dim_feedforward=64), 3)
    ms = ms_swin_keys()
    official = {f"module.backbone.0.{k}": torch.zeros(s) for k, s in ms.items()}
    official.update({"module.fc.W": torch.zeros(1, 3, 1536), "module.fc.b": torch.zeros(1, 3)})
    official["module.backbone.0.layers.0.downsample.reduction.weight"] = torch.randn(384, 768)
    converted = _official_q2l(official, model)
    own = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    got = {k: v for k, v in converted.items() if k.startswith("backbone.")}
    assert set(got) == set(own), (sorted(set(own) - set(got))[:5], sorted(set(got) - set(own))[:5])
    assert all(v.shape == own[k].shape for k, v in got.items())
    torch.testing.assert_close(got["backbone.body.layers.1.downsample.reduction.weight"],
                               official["module.backbone.0.layers.0.downsample.reduction.weight"])
