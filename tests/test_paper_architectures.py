"""Every open-vocabulary paper config builds the CLIP the authors used: OpenAI's ViT-B/16 (QuickGELU).
Each params file is read as a user's run would read it; a test config can no longer hide a paper config's drift."""
import functools

import pytest
from conftest import ROOT
from mlc.params import load_params

# OpenAI CLIP ViT-B/16 (what MKT and QKS load): the architecture their released weights were trained in
OFFICIAL_VIT_B16 = {"activation": "QuickGELU", "image_size": 224, "patch_size": 16, "vision_width": 768,
                    "vision_layers": 12, "vision_heads": 12, "embed_dim": 512, "context_length": 77,
                    "vocab_size": 49408, "text_width": 512, "text_layers": 12, "text_heads": 8}
PAPER_FILES = sorted(p.relative_to(ROOT).as_posix() for d in ("mkt", "qks")
                     for p in (ROOT / "params" / d).glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def _architecture(model_name: str) -> dict:
    import open_clip
    from mlc.clip import _register_configs
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
    from mlc.clip import load_clip
    with pytest.raises(ValueError, match=r"'ViT-B-16' is built with nn.GELU.*use 'ViT-B-16-quickgelu'"):
        load_clip("ViT-B-16", "openai")
