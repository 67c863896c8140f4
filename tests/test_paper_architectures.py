"""Every open-vocabulary paper config builds the CLIP the authors used: OpenAI's ViT-B/16 (QuickGELU).
Each params file is read as a user's run would read it; a test config can no longer hide a paper config's drift."""
import functools

import pytest
from conftest import ROOT

from mlc.config.params import load_params

# OpenAI CLIP ViT-B/16 (what MKT and QKS load): the architecture their released weights were trained in
OFFICIAL_VIT_B16 = {"activation": "QuickGELU", "image_size": 224, "patch_size": 16, "vision_width": 768,
                    "vision_layers": 12, "vision_heads": 12, "embed_dim": 512, "context_length": 77,
                    "vocab_size": 49408, "text_width": 512, "text_layers": 12, "text_heads": 8}
PAPER_FILES = sorted(p.relative_to(ROOT).as_posix() for d in ("mkt", "qks")
                     for p in (ROOT / "params" / d).glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def _architecture(model_name: str) -> dict:
    import open_clip

    from mlc.modeling.clip import _register_configs
    _register_configs()
    m = open_clip.create_model(model_name, pretrained=None)
    blocks = list(m.visual.transformer.resblocks) + list(m.transformer.resblocks)
    acts = {type(b.mlp.gelu).__name__ for b in blocks}
    return {"activation": acts.pop() if len(acts) == 1 else sorted(acts), "image_size": m.visual.image_size[0],
            "patch_size": m.visual.conv1.kernel_size[0], "vision_width": m.visual.transformer.width,
            "vision_layers": len(m.visual.transformer.resblocks),
            "vision_heads": m.visual.transformer.resblocks[0].attn.num_heads, "embed_dim": m.visual.proj.shape[1],
            "context_length": m.context_length, "vocab_size": m.vocab_size, "text_width": m.transformer.width,
            "text_layers": len(m.transformer.resblocks), "text_heads": m.transformer.resblocks[0].attn.num_heads}


def _clip_names(path: str) -> set[str]:
    params = load_params(ROOT / path)
    names = {params.clip.model} if params.clip is not None else set()
    names |= {mp.model.clip_model for mp in params.methods.values() if hasattr(mp.model, "clip_model")}
    return names


def test_there_are_open_vocabulary_paper_configs():
    assert {"params/mkt/nuswide_vitb16.yaml", "params/qks/nuswide_vitb16.yaml",
            "params/qks/openimages_vitb16.yaml"} <= set(PAPER_FILES)


@pytest.mark.slow
@pytest.mark.parametrize("path", PAPER_FILES)
def test_paper_config_builds_openai_vit_b16(path):
    for name in _clip_names(path):
        assert _architecture(name) == OFFICIAL_VIT_B16, f"{path}: CLIP {name!r} is not OpenAI's ViT-B/16"


def test_openai_weights_are_refused_in_a_gelu_model():
    from mlc.modeling.clip import load_clip
    with pytest.raises(ValueError, match=r"'ViT-B-16' is built with nn.GELU.*use 'ViT-B-16-quickgelu'"):
        load_clip("ViT-B-16", "openai")


# ------------------------------------------------------------------------------------------------------------
# Closed-set paper configs: the backbone and head each official repository builds (specs and official code)
# ------------------------------------------------------------------------------------------------------------
RESNET101 = {"kind": "torchvision ResNet", "blocks": [3, 4, 23, 3], "width": 2048, "stride": 32}
OFFICIAL_BACKBONES = {
    # torchvision's V1 file: Q2L (torchvision pretrained=True), SALGL (the same weights under their old name
    # resnet101-5d3b4d8f.pth), SGRE (models/torch_models/resnet.py: resnet101-63fe2227.pth)
    "resnet101": {**RESNET101, "norm": "FrozenBatchNorm2d", "weights": "resnet101-63fe2227.pth"},   # frozen BN
    "resnet101_bn": {**RESNET101, "norm": "BatchNorm2d", "weights": "resnet101-63fe2227.pth"},
    "tresnet_l": {"kind": "TResNet", "blocks": [4, 5, 18, 3], "width": 2432, "stride": 32},    # ASL TResnetL
    "tresnet_l_21k": {"kind": "TResNet", "blocks": [3, 4, 23, 3], "width": 2048, "stride": 32},  # tresnet2 L
    "swin_large_384": {"kind": "Swin", "embed": 192, "depths": [2, 2, 18, 2], "heads": [6, 12, 24, 48],
                       "window": 12, "image": 384, "width": 1536, "stride": 32},
    "cvt_w24_384": {"kind": "CvT", "embed": [192, 768, 1024], "depths": [2, 2, 20], "heads": [3, 12, 16],
                    "activation": "QuickGELU", "width": 1024, "stride": 16},
    "vit_large_224": {"kind": "ViT", "embed": 1024, "depth": 24, "heads": 16, "patch": 16, "image": 224,
                      "width": 1024, "stride": 16},
    "vit_large_448": {"kind": "ViT", "embed": 1024, "depth": 24, "heads": 16, "patch": 16, "image": 448,
                      "width": 1024, "stride": 16},
    "vit_large_448_in21k": {"kind": "ViT", "embed": 1024, "depth": 24, "heads": 16, "patch": 16, "image": 448,
                            "width": 1024, "stride": 16},
}
# the heads the official training commands build (Q2L README R101 command; SALGL / SGRE parser defaults)
OFFICIAL_HEADS = {
    "q2l": {"enc_layers": 1, "dec_layers": 2, "nheads": 4, "hidden_dim": "backbone width"},
    "salgl": {"encoder_layers": 1, "heads": 8, "dim_feedforward": 2048, "att_dim": 1024, "embed_dim": 768,
              "num_steps": 3},
    "sgre": {"enc_layers": 1, "heads": 8, "dim_feedforward": 2048, "att_dim": 1024, "embed_dim": 768,
             "pos": True},
}
# every params file of a method whose official architecture is written down above (its folder and its releases)
CLOSED_SET_FILES = sorted(p.relative_to(ROOT).as_posix() for d in (*OFFICIAL_HEADS, "released")
                          for p in (ROOT / "params" / d).glob("*.yaml")
                          if d != "released" or p.name.split("_")[0] in OFFICIAL_HEADS)


def _backbone_facts(backbone) -> dict:
    body = type(backbone.body).__name__
    facts = {"width": backbone.num_features, "stride": backbone.stride}
    if body == "IntermediateLayerGetter":
        norms = {type(m).__name__ for m in backbone.body.modules() if "BatchNorm" in type(m).__name__}
        from mlc.modeling.backbones import weight_source
        facts.update(kind="torchvision ResNet", norm=norms.pop() if len(norms) == 1 else sorted(norms),
                     blocks=[len(getattr(backbone.body, f"layer{i}")) for i in range(1, 5)],
                     weights=weight_source(backbone.name).source.rsplit("/", 1)[-1])
    elif body == "TResNet":
        facts.update(kind="TResNet", blocks=[len(getattr(backbone.body.body, f"layer{i}")) for i in range(1, 5)])
    elif body == "SwinTransformer":
        m = backbone.body
        facts.update(kind="Swin", embed=m.embed_dim, depths=[len(s.blocks) for s in m.layers],
                     heads=[s.blocks[0].attn.num_heads for s in m.layers],
                     window=m.layers[0].blocks[0].window_size[0], image=m.patch_embed.img_size[0])
    elif body == "CvtBody":
        c = backbone.body.cvt.config
        acts = {type(layer.intermediate.activation).__name__ for s in backbone.body.cvt.encoder.stages
                for layer in s.layers}
        facts.update(kind="CvT", embed=list(c.embed_dim), depths=list(c.depth), heads=list(c.num_heads),
                     activation=acts.pop() if len(acts) == 1 else sorted(acts))
    elif body == "VisionTransformer":
        m = backbone.body
        facts.update(kind="ViT", embed=m.embed_dim, depth=len(m.blocks), heads=m.blocks[0].attn.num_heads,
                     patch=m.patch_embed.patch_size[0], image=m.patch_embed.img_size[0])
    return facts


def _head_facts(name: str, model) -> dict:
    if name == "q2l":
        return {"enc_layers": len(model.encoder), "dec_layers": len(model.decoder),
                "nheads": model.decoder[0].cross_attn.num_heads,
                "hidden_dim": "backbone width" if model.cfg.hidden_dim == model.backbone.num_features
                else model.cfg.hidden_dim}
    cfg = model.cfg
    if name == "salgl":
        return {"encoder_layers": len(model.encoder), "heads": cfg.heads, "dim_feedforward": cfg.dim_feedforward,
                "att_dim": cfg.att_dim, "embed_dim": cfg.embed_dim, "num_steps": cfg.num_steps}
    return {"enc_layers": len(model.encoder), "heads": cfg.heads, "dim_feedforward": cfg.dim_feedforward,
            "att_dim": cfg.att_dim, "embed_dim": cfg.embed_dim, "pos": cfg.pos}


def test_every_closed_set_paper_config_is_checked():
    assert len(CLOSED_SET_FILES) >= 30 and "params/q2l/coco_cvt_w24_384.yaml" in CLOSED_SET_FILES


@pytest.mark.slow
@pytest.mark.parametrize("path", CLOSED_SET_FILES)
def test_paper_config_builds_the_official_architecture(path):
    """Built as a user's run builds it (the params file read, the model created at its size, on the meta
    device so paper-size models cost nothing), then compared with the official backbone and head."""
    from mlc.runs.build import DATASET_CLASSES, untrained_method
    params = load_params(ROOT / path)
    for name, mp in params.methods.items():
        source = params.data.source or "coco"
        model = untrained_method(mp, DATASET_CLASSES[source], on_meta=True).model
        assert _backbone_facts(model.backbone) == OFFICIAL_BACKBONES[mp.model.backbone], (path, name)
        assert _head_facts(mp.model_name, model) == OFFICIAL_HEADS[mp.model_name], (path, name)
        if mp.model_name == "q2l" and mp.model.backbone == "resnet101":
            assert model.encoder[0].ffn.linear1.out_features == 8192           # README: --dim_feedforward 8192
        assert (mp.input.image_size // model.backbone.stride) * model.backbone.stride == mp.input.image_size
