"""Label embeddings: BERT quirks, GloVe sums, CLIP prompt ensembles, and the content-addressed cache."""
import numpy as np
import pytest
import torch

from mlc.methods.qks.prompts import qks_templates
from mlc.modeling import embeddings as E

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "circle", "dining", "table", "traffic", "light",
         "bi", "##cycle", "person"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A randomly initialised 1-layer BERT with a 14-word vocabulary, saved like a Hugging Face model."""
    from transformers import BertConfig, BertModel, BertTokenizer
    d = tmp_path_factory.mktemp("bert")
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).eval().save_pretrained(d)
    BertTokenizer(str(d / "vocab.txt")).save_pretrained(d)
    return d


def test_bert_quirks_token_types_and_index_rule(tiny_bert):
    from transformers import BertModel
    net = BertModel.from_pretrained(tiny_bert).eval()
    names = ["person", "diningtable", "bicycle"]
    out = E.bert_token_embeddings(names, str(tiny_bert), quirks=True)
    with torch.no_grad():
        def hidden(ids):
            ids = torch.tensor([ids])
            return net(input_ids=ids, token_type_ids=torch.ones_like(ids)).last_hidden_state[0]
        v = {w: VOCAB.index(w) for w in VOCAB}
        person = hidden([v["[CLS]"], v["person"]])[1]                       # one word piece: position 1
        dining = hidden([v["[CLS]"], v["dining"], v["table"]])[0]           # renamed, two pieces: [CLS]
        bike = hidden([v["[CLS]"], v["bi"], v["##cycle"]])[0]               # one word, two pieces: [CLS]
    np.testing.assert_allclose(out, torch.stack([person, dining, bike]).numpy(), atol=1e-6)
    plain = E.bert_token_embeddings(["red circle"], str(tiny_bert), quirks=False)
    with torch.no_grad():
        ids = torch.tensor([[v["[CLS]"], v["red"], v["circle"], v["[SEP]"]]])
        ref = net(input_ids=ids).last_hidden_state[0, 1:3].mean(0).numpy()
    np.testing.assert_allclose(plain[0], ref, atol=1e-6)


def test_missing_bert_is_a_clear_error(tmp_path):
    from mlc.modeling.backbones import MissingWeightsError
    with pytest.raises(MissingWeightsError, match=r"not in the local cache \(offline[\s\S]*python -m mlc.weights"):
        E.bert_token_embeddings(["red"], str(tmp_path / "no_bert"))


def test_glove_sums_word_vectors_and_names_a_missing_word(tmp_path):
    g = tmp_path / "glove.txt"
    g.write_text("red 1 2 3\nthe 0 0 0\ncircle 10 20 30\ntraffic 1 1 1\nlight 2 2 2\n")
    out = E.glove_embeddings(["red circle", "traffic light", "red"], g)
    np.testing.assert_array_equal(out, [[11, 22, 33], [3, 3, 3], [1, 2, 3]])
    with pytest.raises(KeyError, match=r"no GloVe vector for the word 'star' of label 'red star'"):
        E.glove_embeddings(["red star"], g)
    g.write_text("red 1 2 3\ncircle 1 x 3\n")
    with pytest.raises(ValueError, match=r"glove.txt:2: malformed vector for 'circle'"):
        E.glove_embeddings(["red circle"], g)


def test_cache_key_covers_templates_labels_and_weights(tmp_path):
    calls = []

    def build(names):
        calls.append(list(names))
        return np.ones((len(names), 2))

    a = E.cached_embeddings(tmp_path, "enc", "w1", ["a {}"], ["x", "y"], lambda: build(["x", "y"]))
    E.cached_embeddings(tmp_path, "enc", "w1", ["a {}"], ["x", "y"], lambda: build(["x", "y"]))
    assert len(calls) == 1 and a.shape == (2, 2)                      # second call: from the cache
    E.cached_embeddings(tmp_path, "enc", "w1", ["the {}"], ["x", "y"], lambda: build(["x", "y"]))
    E.cached_embeddings(tmp_path, "enc", "w1", ["a {}"], ["x", "z"], lambda: build(["x", "z"]))
    E.cached_embeddings(tmp_path, "enc", "w2", ["a {}"], ["x", "y"], lambda: build(["x", "y"]))
    assert len(calls) == 4                                           # template, labels, weights: all rebuild
    assert len(list(tmp_path.glob("enc-*.npy"))) == 4 and len(list(tmp_path.glob("enc-*.json"))) == 4


def test_clip_prompt_ensembles_raw_and_normalised(tmp_path):
    import open_clip

    from mlc.modeling import clip as kit_clip
    from mlc.modeling.clip import load_clip
    kit_clip._register_configs()
    torch.manual_seed(0)
    model = open_clip.create_model("mlc-toy-clip")
    ckpt = tmp_path / "toy.pt"
    torch.save(model.state_dict(), ckpt)
    templates = qks_templates()
    assert len(templates) == 85 and templates[0] == "a bad photo of a {}."
    assert templates[-1] == "this is one {} in the scene."
    raw = E.build_text_embeddings("clip_qks", ["red circle", "blue star"], tmp_path / "cache",
                                  model_name="mlc-toy-clip", pretrained=str(ckpt))
    m, _, tok = load_clip("mlc-toy-clip", str(ckpt))
    with torch.no_grad():
        ref = m.encode_text(tok([t.format("blue star") for t in templates])).mean(0).numpy()
    np.testing.assert_allclose(raw[1], ref, rtol=1e-5, atol=1e-6)     # QKS: the raw mean, not normalised
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1)
    mkt = E.build_text_embeddings("clip_mkt", ["red circle"], tmp_path / "cache", model_name="mlc-toy-clip",
                                  pretrained=str(ckpt))
    with torch.no_grad():
        np.testing.assert_allclose(mkt[0], m.encode_text(tok(["There is a red circle in the scene"]))[0].numpy(),
                                   rtol=1e-5, atol=1e-6)
    unit = E.build_text_embeddings("clip", ["red circle"], tmp_path / "cache", model_name="mlc-toy-clip",
                                   pretrained=str(ckpt), templates=["a {}", "the {}"], normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, rtol=1e-5)


def test_missing_clip_weights_name_the_file(tmp_path):
    from mlc.modeling.backbones import MissingWeightsError
    from mlc.modeling.clip import load_clip
    with pytest.raises(MissingWeightsError, match="ViT-B-16.pt"):
        load_clip("ViT-B-16", str(tmp_path / "ViT-B-16.pt"))


@pytest.mark.parametrize("normalize", [False, True])
def test_batched_prompts_equal_one_label_at_a_time(normalize):
    """encode_prompts batches prompts across labels (issue 24); a batch that splits a label's templates, or
    holds several labels, gives each label the embedding it gets alone, to 1e-5."""
    import open_clip

    from mlc.modeling import clip as kit_clip
    kit_clip._register_configs()
    torch.manual_seed(0)
    model = open_clip.create_model("mlc-toy-clip").eval()
    tok = open_clip.get_tokenizer("mlc-toy-clip")
    names = ["red circle", "blue star", "green square", "cat", "traffic light"]
    templates = qks_templates()[:6]
    with torch.no_grad():
        alone = []
        for name in names:
            emb = model.encode_text(tok([t.format(name) for t in templates]))
            emb = emb / emb.norm(dim=-1, keepdim=True) if normalize else emb
            emb = emb.mean(0)
            alone.append(emb / emb.norm() if normalize else emb)
    alone = torch.stack(alone).numpy()
    for batch_size in (1, 4, 7, 1000):                  # 7 splits every label's six templates across batches
        batched = kit_clip.encode_prompts(model, tok, names, templates, normalize, normalize, batch_size=batch_size)
        assert batched.shape == alone.shape and batched.dtype == np.float32
        np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="needs labels and templates"):
        kit_clip.encode_prompts(model, tok, [], templates)


def test_text_encoding_on_the_prompts_own_length_equals_open_clip_s():
    """encode_text cuts the padding after a batch's longest prompt (a causal text tower never lets it reach
    the end-of-text feature): the same embeddings as open_clip's full-length encode_text, for prompts of
    different lengths in one batch, and the untouched path for a model it cannot cut."""
    import open_clip

    from mlc.modeling import clip as kit_clip
    kit_clip._register_configs()
    torch.manual_seed(0)
    model = open_clip.create_model("mlc-toy-clip").eval()
    tok = open_clip.get_tokenizer("mlc-toy-clip")
    tokens = tok(["a cat", "a photo of a small red circle next to a big blue star at the beach", "sky"])
    assert tokens.shape[1] == 32 and int(tokens.argmax(-1).max()) + 1 < 20
    with torch.no_grad():
        full = model.encode_text(tokens)
        np.testing.assert_allclose(kit_clip.encode_text(model, tokens).numpy(), full.numpy(), rtol=1e-5, atol=1e-5)
        model.attn_mask = None                              # no causal mask: the padding would count
        assert torch.equal(kit_clip.encode_text(model, tokens), model.encode_text(tokens))
