"""CvT for Q2L's best model (Q2L-CvT_w24-384): transformers' CvtModel loaded from Microsoft's key layout gives
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
from mlc.models.backbones import CvtBody, QuickGELU, convert_official_cvt

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
    from mlc.models.backbones import _REGISTRY, register_backbone
    from mlc.models.q2l import Q2LConfig, Query2Label, _official_q2l
    if "cvt_oracle_tiny" not in _REGISTRY:
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
    from mlc.models.backbones import CVT_W24, backbone_spec
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
