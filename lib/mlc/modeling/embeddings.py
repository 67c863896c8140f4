"""Label embeddings: the text side that SALGL and SGRE attend with.

A model config names its embeddings with one string (``label_embeddings``):

- ``"random"``: a learnable parameter drawn at construction (the official ``--embed-type random``);
- ``"words"``: a fixed vector per label, the **sum** of one seeded random vector per word of its name
  (the way SGRE sums GloVe word vectors).  Labels that share a word get related embeddings, which is
  all the toy world needs; it runs without any pretrained text model;
- a path to a ``.npy`` file ``[C, E]`` (the official ``bert.npy`` / ``glove.npy``), rows in the order of
  the run's labels.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from mlc.core.io import atomic_write_stream, atomic_write_text
from mlc.core.online import offline
from mlc.core.registry import PROMPTS
from mlc.modeling.backbones import MissingWeightsError
from mlc.modeling.clip import encode_prompts, load_clip


def word_vector(word: str, dim: int) -> np.ndarray:
    """A unit-variance Gaussian vector determined by the word alone (same word, same vector)."""
    seed = int.from_bytes(hashlib.sha256(word.lower().encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def word_sum_embeddings(label_names: list[str], dim: int) -> np.ndarray:
    """[C, dim]: per label the sum of its words' vectors (names split on spaces, '_' and '-')."""
    out = np.zeros((len(label_names), dim), np.float32)
    for i, name in enumerate(label_names):
        words = name.replace("_", " ").replace("-", " ").split()
        if not words:
            raise ValueError(f"label {i} has an empty name: cannot build its word embedding")
        out[i] = np.sum([word_vector(w, dim) for w in words], axis=0)
    return out


def load_embedding_file(path: str | Path, num_classes: int) -> np.ndarray:
    """A ``.npy`` table [C, E] (no pickles); a wrong row count is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label embedding file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ValueError(f"{path}: not a readable .npy array ({e})") from None
    if arr.ndim != 2 or arr.shape[0] != num_classes:
        raise ValueError(f"{path}: label embeddings have shape {tuple(arr.shape)}, expected [{num_classes}, E] "
                         f"(one row per label of the run)")
    return arr.astype(np.float32)


def fixed_label_embeddings(spec: str, label_names: list[str] | None, num_classes: int,
                           dim: int) -> torch.Tensor | None:
    """The fixed embedding table named by ``spec``, or None for ``"random"`` (learnable: the model draws it).

    ``"checkpoint"``: zeros [C, dim] that the weights file fills (a released model holds its own table).
    Without label names (e.g. a model built only to load a checkpoint) ``"words"`` falls back to zeros
    of the right shape: the checkpoint or the caller fills the buffer.
    """
    if spec == "random":
        return None
    if spec == "checkpoint":
        return torch.zeros(num_classes, dim)
    if spec == "words":
        if label_names is None:
            return torch.zeros(num_classes, dim)
        if len(label_names) != num_classes:
            raise ValueError(f"{len(label_names)} label names for {num_classes} classes")
        return torch.from_numpy(word_sum_embeddings(list(label_names), dim))
    return torch.from_numpy(load_embedding_file(spec, num_classes))


# ------------------------------------------------------------------------------------------------
# Text encoders (BERT, GloVe, CLIP prompt ensembles) with a content-addressed cache
# ------------------------------------------------------------------------------------------------
# SALGL/SGRE's embedding.py renames three VOC classes before encoding them.
VOC_RENAMES = {"diningtable": "dining table", "pottedplant": "potted plant", "tvmonitor": "tv monitor"}


def default_cache_dir() -> Path:
    """Where label-name embeddings are cached outside a run: ``$XDG_CACHE_HOME/mlc-kit/embeddings`` (by default
    ``~/.cache/mlc-kit/embeddings``), never a folder relative to the current one."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlc-kit" / "embeddings"


def weights_identity(weights: str | Path) -> str:
    """A cache-key component for weights: a file by path, size and modification time; a name as is."""
    p = Path(str(weights))
    if p.exists():
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        return json.dumps([[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files])
    return str(weights)


def cached_embeddings(cache_dir: str | Path, encoder: str, weights: str, templates: list[str] | None,
                      label_names: list[str], build, **settings) -> np.ndarray:
    """Load or build (and store) an embedding table under a key of everything that determines it:
    encoder, weights, templates, label list and settings.  A changed template or label never reuses
    a stale table."""
    spec = {"encoder": encoder, "weights": weights_identity(weights), "templates": templates,
            "labels": list(label_names), "settings": settings}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{encoder}-{key}.npy"
    if path.is_file():
        return np.load(path)
    table = np.asarray(build(), dtype=np.float32)
    if table.shape[0] != len(label_names):
        raise RuntimeError(f"{encoder}: built {table.shape[0]} rows for {len(label_names)} labels")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_stream(path, lambda f: np.save(f, table))
    atomic_write_text(path.with_suffix(".json"), json.dumps({**spec, "shape": list(table.shape)}, indent=1))
    return table


def _load_bert(model: str):
    """transformers' download into the Hugging Face cache (offline: the cache only, see :mod:`mlc.core.online`)."""
    from transformers import AutoModel, AutoTokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=offline())
        net = AutoModel.from_pretrained(model, local_files_only=offline())
    except (OSError, ValueError) as e:
        where = "in the local cache (offline: MLC_OFFLINE or HF_HUB_OFFLINE is set)" if offline() else \
            "downloadable"
        raise MissingWeightsError(
            f"BERT weights {model!r} are not {where} ({str(e).splitlines()[0]}).\n"
            f"  With internet: python -m mlc.weights PARAMS_FILE (or: hf download {model}), then copy the Hugging "
            f"Face cache (HF_HOME) if needed,\n"
            f"  or point text.bert_model at a local directory holding config.json, vocab.txt and the weights."
        ) from None
    return tokenizer, net.eval()


@torch.no_grad()
def bert_token_embeddings(label_names: list[str], model: str = "bert-base-uncased", quirks: bool = True
                          ) -> np.ndarray:
    """One BERT vector per label, [C, hidden].

    ``quirks=True`` reproduces SALGL/SGRE's embedding.py: three VOC names respaced, the text
    "[CLS] <label>" with no [SEP], every token_type_id 1, the last hidden state at position 1 when the
    label is a single word piece, else at position 0 (the [CLS] token).  ``quirks=False`` is the plain
    version: "[CLS] <label> [SEP]" with type ids 0, the mean over the label's word pieces.
    """
    tokenizer, net = _load_bert(model)
    out = []
    for name in label_names:
        if quirks:
            tokens = ["[CLS]"] + tokenizer.tokenize(VOC_RENAMES.get(name, name))
            ids = torch.tensor([tokenizer.convert_tokens_to_ids(tokens)])
            hidden = net(input_ids=ids, token_type_ids=torch.ones_like(ids)).last_hidden_state[0]
            out.append(hidden[1] if len(tokens) == 2 else hidden[0])
        else:
            enc = tokenizer(name, return_tensors="pt")
            hidden = net(**enc).last_hidden_state[0]
            out.append(hidden[1:-1].mean(0))
    return torch.stack(out).float().numpy()


def glove_embeddings(label_names: list[str], path: str | Path) -> np.ndarray:
    """SGRE's GloVe vectors: each label split on spaces, its word vectors **summed** (the official
    comment says average; the code sums).  The file is streamed once; a word it lacks is an error."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"GloVe file not found: {path} (download glove.840B.300d.zip from "
                                  f"nlp.stanford.edu and unzip it there)")
    words = {w for name in label_names for w in name.split(" ")}
    vectors: dict[str, np.ndarray] = {}
    dim = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, 1):
            word, _, rest = line.rstrip("\n").partition(" ")
            if word not in words or word in vectors:
                continue
            try:
                vec = np.array(rest.split(" "), dtype=np.float32)
            except ValueError:
                raise ValueError(f"{path}:{line_no}: malformed vector for {word!r}") from None
            if dim is not None and len(vec) != dim:
                raise ValueError(f"{path}:{line_no}: {len(vec)} values for {word!r}, expected {dim}")
            dim = len(vec)
            vectors[word] = vec
            if len(vectors) == len(words):
                break
    for name in label_names:
        for w in name.split(" "):
            if w not in vectors:
                raise KeyError(f"{path}: no GloVe vector for the word {w!r} of label {name!r}")
    return np.stack([np.sum([vectors[w] for w in name.split(" ")], axis=0) for name in label_names])


def clip_prompt_embeddings(label_names: list[str], model_name: str, pretrained: str | None,
                           templates: list[str], normalize: bool = False) -> np.ndarray:
    """The mean over templates of CLIP text embeddings, [C, E].  ``normalize=False`` averages the raw
    outputs, as QKS (85 templates) and MKT (one template) do; True is CLIP's own recipe."""
    model, _, tokenizer = load_clip(model_name, pretrained, device="cuda" if torch.cuda.is_available() else "cpu")
    return encode_prompts(model, tokenizer, label_names, templates, normalize, normalize, progress=True)


def build_text_embeddings(kind: str, label_names: list[str], cache_dir: str | Path, **kw) -> np.ndarray:
    """One entry point with caching.  kinds: ``bert`` (model, quirks), ``glove`` (path), ``clip`` (model_name,
    pretrained, templates, normalize), a registered CLIP prompt set such as ``clip_qks`` or ``clip_mkt``
    (model_name, pretrained, normalize: its templates are the method's), ``words`` (dim)."""
    if kind == "bert":
        model, quirks = kw.get("model", "bert-base-uncased"), kw.get("quirks", True)
        return cached_embeddings(cache_dir, "bert", model, None, label_names,
                                 lambda: bert_token_embeddings(label_names, model, quirks), quirks=quirks)
    if kind == "glove":
        return cached_embeddings(cache_dir, "glove", kw["path"], None, label_names,
                                 lambda: glove_embeddings(label_names, kw["path"]), reduce="sum")
    if kind == "clip" or kind in PROMPTS:
        templates = kw["templates"] if kind == "clip" else PROMPTS.get(kind)()
        normalize = kw.get("normalize", False)
        return cached_embeddings(cache_dir, kind, kw["pretrained"] or kw["model_name"], templates, label_names,
                                 lambda: clip_prompt_embeddings(label_names, kw["model_name"], kw["pretrained"],
                                                                templates, normalize),
                                 model_name=kw["model_name"], normalize=normalize)
    if kind == "words":
        dim = kw.get("dim", 64)
        return cached_embeddings(cache_dir, "words", "sha256-seeded", None, label_names,
                                 lambda: word_sum_embeddings(label_names, dim), dim=dim)
    raise ValueError(f"unknown text encoder {kind!r} (bert, glove, clip, words, or a CLIP prompt set: "
                     f"{', '.join(PROMPTS.names())})")


