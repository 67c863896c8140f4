"""SALGL and SGRE: official outputs from the official state dicts, the shared blocks, the training pieces."""
import dataclasses

import pytest
import torch

from mlc.methods.salgl import model as salgl_mod
from mlc.methods.salgl.model import SALGL, SALGLConfig, comatrix_to_transition
from mlc.methods.sgre import model as sgre_mod
from mlc.methods.sgre.model import SGRE, SGREConfig
from mlc.modeling.layers import LowRankBilinearAttention, sine_position_encoding


def _salgl_from_record(rec):
    c = rec["config"]
    cfg = SALGLConfig(backbone=f"{c['backbone']}_bn", num_scenes=c["num_scenes"], num_steps=c["num_steps"],
                      soft=c["soft"], outmess=c["outmess"], normalize=c["normalize"], ignore_self=c["ignore_self"],
                      pos=c["pos"], heads=c["encoder"]["nhead"], dim_feedforward=c["encoder"]["dim_feedforward"],
                      dropout=c["encoder"]["dropout"], att_dim=c["att_dim"], embed_dim=c["embed_dim"])
    return SALGL(cfg, c["num_classes"])


@pytest.mark.parametrize("record", ["salgl-small", "salgl-small-soft"])
@pytest.mark.parametrize("fuse_score,label_chunk", [(True, None), (False, None), (True, 7)])
def test_salgl_official_checkpoint_reproduces_official_outputs(oracles, record, fuse_score, label_chunk, speed):
    from regen import official_state_dict
    sd, rec = official_state_dict(oracles / record)
    model = _salgl_from_record(rec)
    model.cfg.fuse_score = model.attention.fuse_score = fuse_score
    model.attention.label_chunk = label_chunk
    model.load_state_dict(salgl_mod.convert_official_state_dict({f"module.{k}": v for k, v in sd.items()}),
                          strict=True)
    torch.testing.assert_close(model.label_embeddings, rec["extra"]["label_embeddings"])
    comatrix_before = model.comatrix.clone()
    out = speed.forward(model, rec["input"])
    o = rec["outputs"]
    torch.testing.assert_close(out["logits"], o["logits"], atol=1e-4, rtol=1e-4)
    for key, kit_key in (("scene_probs", "scene_probs"), ("att_weights", "att_weights"), ("comat", "comat"),
                         ("sample_en", "sample_en"), ("batch_en", "batch_en")):
        torch.testing.assert_close(out[kit_key], o[key], atol=1e-4, rtol=1e-4)
    assert torch.equal(model.comatrix.cpu(), comatrix_before), "eval mode must not count co-occurrences"


def test_sgre_official_checkpoint_reproduces_official_outputs(oracles, speed):
    from regen import official_state_dict
    sd, rec = official_state_dict(oracles / "sgre-small")
    c = rec["config"]
    cfg = SGREConfig(backbone=f"{c['arch']}_bn", pos=c["pos"], rm_cls=c["rm_cls"], enc_layers=c["num_layers"],
                     heads=c["num_heads"], dim_feedforward=c["encoder_dim_feedforward"],
                     dropout=c["encoder_dropout"], pre_norm=c["normalize_before"], att_dim=c["att_dim"],
                     tau=c["tau"], embed_dim=c["embed_dim"], object_loss_weight=c["lamda"])
    model = SGRE(cfg, c["num_classes"])
    model.load_state_dict(sgre_mod.convert_official_state_dict({f"module.{k}": v for k, v in sd.items()}),
                          strict=True)
    model.label_embeddings.copy_(rec["extra"]["label_embeddings"])   # official: model.embeddings = ...
    out = speed.forward(model, rec["input"])
    o = rec["outputs"]
    torch.testing.assert_close(out["logits"], o["logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["object_logits"], o["intermediate.logits1"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["alpha"], o["alpha"], atol=1e-5, rtol=1e-4)
    pe = sine_position_encoding(7, 7, 2048).T.reshape(1, -1, 7, 7)
    torch.testing.assert_close(pe, rec["fixed"]["position_embedding.pe"])
    # the embeddings are a non-persistent buffer: not in the state dict, but moved by .to()
    assert "label_embeddings" not in model.state_dict()
    assert model.cpu().to(torch.float64).label_embeddings.dtype == torch.float64


def test_label_attention_chunked_and_fused_forms_match_the_plain_one():
    torch.manual_seed(0)
    att = LowRankBilinearAttention(16, 12, att_dim=32)
    tokens, emb = torch.randn(3, 10, 16, requires_grad=True), torch.randn(9, 12)
    results = []
    for fuse, chunk in ((False, None), (True, None), (True, 4), (False, 2)):
        att.fuse_score, att.label_chunk = fuse, chunk
        att.zero_grad()
        tokens.grad = None
        feats, alpha = att(tokens, emb)
        (feats.square().sum() + alpha[:, :, 0].sum()).backward()
        results.append((feats.detach(), alpha.detach(), tokens.grad.clone(), att.hidden.weight.grad.clone(),
                        att.score.weight.grad.clone()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[0][1].sum(-1), torch.ones(3, 9))


def test_transition_matrix_is_conditional_probability_with_guards():
    m = torch.tensor([[[4., 2., 0.], [2., 3., 0.], [0., 0., 0.]]])     # label 2 never seen
    p = comatrix_to_transition(m)
    torch.testing.assert_close(p[0, 0], torch.tensor([1., 0.5, 0.]))   # P(b | a=0)
    torch.testing.assert_close(p[0, 1], torch.tensor([2 / 3, 1., 0.]))
    assert torch.all(p[0, 2] == 0)
    q = comatrix_to_transition(m, ignore_self=True, normalize=True)
    torch.testing.assert_close(q[0, 0], torch.tensor([0., 1., 0.]), atol=1e-6, rtol=0)
    assert torch.all(q[0, 2] == 0)


@pytest.mark.parametrize("soft", [False, True])
def test_comatrix_update_is_the_per_sample_official_loop(soft):
    torch.manual_seed(0)
    model = SALGL(SALGLConfig(num_scenes=3, soft=soft, att_dim=16, dim_feedforward=32, heads=2), 5)
    p = torch.softmax(torch.randn(6, 3), -1)
    y = (torch.rand(6, 5) > 0.5).float()
    y[0, 1] = -1                                                   # unknown: not counted
    model.update_comatrix(p, y)
    expected = torch.zeros(3, 5, 5)
    for b in range(6):                                             # the official per-sample loop
        yb = y[b].clamp(min=0)
        outer = torch.outer(yb, yb)
        if soft:
            for s in range(3):
                expected[s] += p[b, s] * outer
        else:
            expected[p[b].argmax()] += outer
    torch.testing.assert_close(model.comatrix, expected)


def test_salgl_training_step_counts_labels_and_trains_the_scene_classifier():
    from mlc.config.params import LossParams
    from mlc.core.registry import method_builder
    torch.manual_seed(0)
    model = SALGL(SALGLConfig(num_scenes=3, att_dim=16, dim_feedforward=32, heads=2), 5,
                  label_names=[f"red w{i}" for i in range(5)])
    method = method_builder("salgl")(model, LossParams())
    images, y = torch.randn(4, 3, 32, 32), (torch.rand(4, 5) > 0.5).float()
    model.train()
    out = method.forward_fn(model, images, y)
    losses = method.loss_fn(out, y)
    assert set(losses) == {"loss", "classification", "sample_en", "batch_en"}
    losses["loss"].backward()
    assert model.comatrix.sum() == (y.sum(1) ** 2).sum()            # every sample's y y^T counted once
    assert model.scene_linear.weight.grad.abs().sum() > 0           # trained by the entropy terms
    # comat_ema false: the EMA model's memory follows the live one
    ema = SALGL(dataclasses.replace(model.cfg), 5)
    model.cfg.comat_ema = False
    method.on_step_end(model, ema)
    assert torch.equal(ema.comatrix, model.comatrix)


def test_sgre_loss_is_pixel_plus_lambda_object():
    from mlc.config.params import LossParams
    from mlc.core.registry import method_builder
    from mlc.modeling.losses import AsymmetricLoss
    model = SGRE(SGREConfig(att_dim=16, dim_feedforward=32, heads=2, object_loss_weight=0.4), 6)
    method = method_builder("sgre")(model, LossParams())
    out = model.train()(torch.randn(2, 3, 32, 32))
    y = torch.tensor([[1, 0, 0, 1, -1, 0], [0, 1, 0, 0, 0, 1]])
    losses = method.loss_fn(out, y)
    asl = AsymmetricLoss()
    torch.testing.assert_close(losses["loss"], asl(out["logits"], y) + 0.4 * asl(out["object_logits"], y))
    assert out["attention"].shape == (2, 6, 4, 4)


def test_converters_reject_foreign_keys():
    with pytest.raises(KeyError, match="official SALGL key 'query_embed.weight'"):
        salgl_mod.convert_official_state_dict({"query_embed.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="official SGRE key"):
        sgre_mod.convert_official_state_dict({"module.scene_linear.weight": torch.zeros(1)})


@pytest.mark.parametrize("params_file,num_classes,millions", [("params/salgl/coco_r101_448.yaml", 80, 105.36),
                                                               ("params/sgre/coco_r101_448.yaml", 80, 105.69),
                                                               ("params/sgre/coco_tresl_448.yaml", 80, 139.45)])
def test_paper_config_parameter_counts(params_file, num_classes, millions):
    from conftest import ROOT

    from mlc.config.params import load_params
    from mlc.core.registry import create_model
    (mp,) = load_params(ROOT / params_file).methods.values()
    cfg = dataclasses.replace(mp.model, pretrained=False, label_embeddings="words")   # BERT file: not needed for shapes
    with torch.device("meta"):
        model = create_model(mp.model_name, cfg, num_classes)
    assert round(sum(t.numel() for t in model.parameters()) / 1e6, 2) == millions
