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
from pathlib import Path

import numpy as np
import torch


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

    Without label names (e.g. a model built only to load a checkpoint) ``"words"`` falls back to zeros
    of the right shape: the checkpoint or the caller fills the buffer.
    """
    if spec == "random":
        return None
    if spec == "words":
        if label_names is None:
            return torch.zeros(num_classes, dim)
        if len(label_names) != num_classes:
            raise ValueError(f"{len(label_names)} label names for {num_classes} classes")
        return torch.from_numpy(word_sum_embeddings(list(label_names), dim))
    return torch.from_numpy(load_embedding_file(spec, num_classes))
