"""QKS and MKT: official outputs from the official state dicts (oracles), and the open-vocabulary pieces."""
import json

import pytest
import torch


def register_oracle_clip(tmp_path, name, ctor):
    """An open_clip config equivalent to the official OpenAI-CLIP constructor (QuickGELU)."""
    import open_clip
    heads = ctor["vision_width"] // 64
    cfg = {"embed_dim": ctor["embed_dim"], "quick_gelu": True,
           "vision_cfg": {"image_size": ctor["image_resolution"], "layers": ctor["vision_layers"],
                          "width": ctor["vision_width"], "patch_size": ctor["vision_patch_size"],
                          "head_width": ctor["vision_width"] // heads},
           "text_cfg": {"context_length": ctor["context_length"], "vocab_size": ctor["vocab_size"],
                        "width": ctor["transformer_width"], "heads": ctor["transformer_heads"],
                        "layers": ctor["transformer_layers"]}}
    d = tmp_path / "clip_cfg"
    d.mkdir(exist_ok=True)
    (d / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d)


def test_qks_official_checkpoint_reproduces_official_outputs(oracles, tmp_path, speed):
    from regen import official_state_dict

    from mlc.methods.qks.model import QKS, QKSConfig, convert_official_state_dict
    sd, rec = official_state_dict(oracles / "qks-small")
    c = rec["config"]
    register_oracle_clip(tmp_path, "qks-oracle-clip", c["clip_ctor"])
    cfg = QKSConfig(clip_model="qks-oracle-clip", clip_pretrained=None, num_query_tokens=c["num_query_tokens"],
                    num_layers=c["num_hidden_layers"], heads=12, rm_cls=c["rmcls"])
    model = QKS(cfg, c["num_seen"])
    missing, unexpected = model.load_state_dict(convert_official_state_dict(sd), strict=False)
    assert not unexpected and not missing
    model.set_label_embeddings(rec["extra"]["test_text_features"])
    out = speed.forward(model, rec["input"])
    o = rec["outputs"]
    torch.testing.assert_close(out["logits"], o["logits"], atol=1e-4, rtol=1e-4)
    assert torch.equal(out["indices"], o["indices"])
    torch.testing.assert_close(out["cos_similarity"], o["cos_similarity"], atol=1e-4, rtol=1e-4)
    for i in range(2):
        torch.testing.assert_close(out["att_weights"][i], o[f"att_weights.{i}"], atol=1e-5, rtol=1e-4)
    assert out["attention"].shape == (2, 30, 14, 14)


def test_mkt_stage1_official_checkpoint_reproduces_official_outputs(oracles, tmp_path, speed):
    from regen import official_state_dict

    from mlc.methods.mkt.model import MKT, MKTConfig, convert_official_state_dict
    sd, rec = official_state_dict(oracles / "mkt-small")
    c = rec["config"]
    register_oracle_clip(tmp_path, "mkt-oracle-clip", c["clip_ctor"])
    model = MKT(MKTConfig(clip_model="mkt-oracle-clip", clip_pretrained=None, topk=c["topk"]), 30)
    model.load_state_dict(convert_official_state_dict({f"module.{k}": v for k, v in sd.items()}), strict=True)
    model.eval()
    emb = rec["extra"]["label_embeddings"]
    o = rec["outputs"]

    def with_labels(table):
        return lambda m, x: (m.set_label_embeddings(table.to(x.device)), m(x))[1]
    out = speed.forward(model, rec["input"], call=with_labels(emb))
    torch.testing.assert_close(out["logits"], o["logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["pred_feat"], o["pred_feat"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["dist_feat"], o["dist_feat"], atol=1e-4, rtol=1e-4)
    seen = speed.forward(model, rec["input"], call=with_labels(emb[:20]))
    torch.testing.assert_close(seen["logits"], o["logits_seen"], atol=1e-4, rtol=1e-4)
    unseen = speed.forward(model, rec["input"], call=with_labels(emb[20:]))
    torch.testing.assert_close(unseen["logits"], o["logits_unseen"], atol=1e-4, rtol=1e-4)
    assert out["attention"].shape == (2, 30, 14, 14)


def test_prompt_learner_context_equals_training_the_whole_token_table():
    """Official stage 2 trains all 49408 rows with label positions overwritten by a frozen snapshot; the
    kit trains only the template rows.  After AdamW steps (with weight decay) the embeddings agree."""
    import open_clip

    from mlc.methods.mkt.model import PromptLearner
    from mlc.modeling.clip import _register_configs
    _register_configs()
    torch.manual_seed(0)
    clip_model = open_clip.create_model("mlc-toy-clip")
    tok = open_clip.get_tokenizer("mlc-toy-clip")
    names = ["red circle", "blue star", "the scene"]
    kit = PromptLearner(clip_model, tok, names)
    # the official formulation
    table = torch.nn.Parameter(clip_model.token_embedding.weight.detach().clone())
    snapshot = table.detach().clone()
    tokens = tok(["There is a {} in the scene".format(n) for n in names])
    label_pos = torch.zeros_like(tokens, dtype=torch.bool)
    for r, n in enumerate(names):
        k = len(tok([n])[0].nonzero()) - 2                   # word pieces of the label
        label_pos[r, 4:4 + k] = True

    def official():
        x = torch.where(label_pos[..., None], snapshot[tokens], table[tokens])
        x = clip_model.transformer(x + clip_model.positional_embedding, attn_mask=clip_model.attn_mask)
        x = clip_model.ln_final(x)
        return x[torch.arange(len(names)), tokens.argmax(-1)] @ clip_model.text_projection

    torch.testing.assert_close(kit(), official(), atol=1e-5, rtol=1e-5)
    opt_a = torch.optim.AdamW([kit.context], lr=1e-2, weight_decay=0.05)
    opt_b = torch.optim.AdamW([table], lr=1e-2, weight_decay=0.05)
    target = torch.randn(len(names), kit().shape[1])
    for _ in range(3):
        for opt, fn in ((opt_a, kit), (opt_b, official)):
            opt.zero_grad()
            ((fn() - target) ** 2).mean().backward()
            opt.step()
    with torch.no_grad():
        torch.testing.assert_close(kit(), official(), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(kit(), PromptLearner(clip_model, tok, names)(), atol=1e-4)   # it did learn


def test_mkt_paper_config_trains_blocks_10_11_ln_post_proj_with_layer_decay():
    import dataclasses

    from conftest import ROOT

    from mlc.config.params import load_params
    from mlc.core.registry import create_model
    from mlc.engine.optim import build_param_groups
    mp = load_params(ROOT / "params/mkt/nuswide_vitb16.yaml").methods["mkt"]
    model = create_model("mkt", dataclasses.replace(mp.model, clip_pretrained=None), 925)
    groups = {g["name"]: g for g in build_param_groups(model, mp.train)}
    trained = sum(p.numel() for g in groups.values() for p in g["params"])
    assert sum(p.numel() for p in model.parameters()) == 86_192_640
    assert trained == 14_570_496                                    # the spec's ~14.6 M
    scales = {r"resblocks\.10\.": 0.4225, r"resblocks\.11\.": 0.65, "default": 1.0}
    # the official optimizer exempts 1-D parameters (biases, LayerNorm) from weight decay: decay_1d_params: false
    assert {n: round(g["lr"] / mp.train.lr, 4) for n, g in groups.items()} == {
        **scales, **{f"{n} (no decay)": s for n, s in scales.items()}}
    assert all(g["weight_decay"] == 0 for n, g in groups.items() if n.endswith("(no decay)"))
    assert all(p.ndim == 1 for n, g in groups.items() if n.endswith("(no decay)") for p in g["params"])
    assert all(g["weight_decay"] == mp.train.weight_decay > 0 for n, g in groups.items() if n in scales)


def test_mkt_stage2_converter_takes_the_tuned_template_rows():
    from mlc.methods.mkt.model import MKT, MKTConfig, convert_official_prompt_state_dict
    from mlc.modeling.clip import _register_configs
    _register_configs()
    torch.manual_seed(0)
    model = MKT(MKTConfig(clip_model="mlc-toy-clip", clip_pretrained=None, stage="prompt"), 2,
                label_names=["red circle", "blue star"])
    p = model.prompt
    table = p.token_table.clone()
    table[p.context_ids] += 1.0                                   # what stage 2 learnt
    official = {"module.token_embedding.weight": table, "module.positional_embedding": p.positional_embedding.detach(),
                "module.text_projection": p.text_projection.detach()}
    before = p().detach()
    model.load_state_dict(convert_official_prompt_state_dict(official, model), strict=False)
    torch.testing.assert_close(p.context.detach(), table[p.context_ids])
    assert not torch.allclose(p().detach(), before)
    official["module.text_projection"] = official["module.text_projection"] + 1
    with pytest.raises(ValueError, match="differs from the CLIP"):
        convert_official_prompt_state_dict(official, model)


def test_visual_tokens_run_sequence_first_with_the_same_values_and_gradients():
    """visual_tokens runs a training-mode open_clip ViT sequence-first (frozen blocks were 3x slower batch-first,
    benchmarks/vs_official.py): the same tokens and gradients as open_clip's own forward, the attention's layout
    flag restored, and eval mode left on torch's fused path."""
    import open_clip

    from mlc.modeling import clip as kit_clip
    kit_clip._register_configs()
    torch.manual_seed(0)
    visual = open_clip.create_model("mlc-toy-clip").visual.train()
    for p in visual.transformer.resblocks[0].parameters():
        p.requires_grad_(False)                                   # a frozen block, as MKT freezes its first ones
    images = torch.randn(3, 3, 64, 64)
    ours = kit_clip.visual_tokens(visual, images)
    ours.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in visual.named_parameters() if p.grad is not None}
    visual.zero_grad()
    theirs = visual.ln_post(visual.transformer(visual._embeds(images)))
    theirs.square().sum().backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert grads.keys() == {n for n, p in visual.named_parameters() if p.grad is not None}
    scale = max(float(g.abs().max()) for g in grads.values())
    for n, p in visual.named_parameters():          # float rounding of sums in another order, to the largest grad
        if p.grad is not None:
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-3, atol=1e-5 * scale)
    assert all(b.attn.batch_first for b in visual.transformer.resblocks)
    calls = []
    visual.transformer.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        reference = kit_clip.visual_tokens(visual.eval(), images)
    assert calls == [1]                                           # eval mode: open_clip's forward, unchanged
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = kit_clip.visual_tokens(visual, images)              # a frozen CLIP in a bf16 step: sequence-first
    assert calls == [1] and low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), reference, rtol=0.1, atol=0.1)
