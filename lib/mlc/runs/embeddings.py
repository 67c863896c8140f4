"""The label-embedding tables of a run (notebook 03, ``mlc embeddings``), built where the params point."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mlc.config.params import text_encoder_names
from mlc.core.io import atomic_write_stream
from mlc.core.registry import PROMPTS
from mlc.modeling.embeddings import build_text_embeddings
from mlc.runs.data import prepare_data
from mlc.runs.toy_clip import clip_checkpoint


def build_run_embeddings(params, encoders: list[str] | None = None, manifest=None, progress: bool = True
                         ) -> dict[str, tuple[np.ndarray, Path]]:
    """Build the label-embedding tables a run needs (``text.encoders`` by default) into
    ``<manifest>/embeddings/<encoder>.npy``, where the paper configs point; returns {encoder: (table, file)}.

    What ``mlc embeddings PARAMS`` and notebook 03 call.  Each table is cached
    (see :func:`mlc.modeling.embeddings.cached_embeddings`).
    """
    manifest = manifest or prepare_data(params, progress=progress)
    encoders = list(params.text.encoders if encoders is None else encoders)
    names, t = manifest.label_names, params.text
    cache = params.resolve_path(params.output_root) / "embeddings"
    clip_path = None
    if params.clip is not None:
        clip_path = str(clip_checkpoint(params))        # clip.pretrained (resolved), or the run's toy CLIP

    def build(kind: str) -> np.ndarray:
        if kind in ("bert", "bert_plain"):
            return build_text_embeddings("bert", names, cache, model=t.bert_model, quirks=kind == "bert")
        if kind == "glove":
            return build_text_embeddings("glove", names, cache, path=t.glove_path)
        if kind in PROMPTS:
            if clip_path is None:
                raise ValueError(f"{params.source}: {kind} needs a CLIP (a 'clip' section in the params)")
            return build_text_embeddings(kind, names, cache, model_name=params.clip.model, pretrained=clip_path)
        if kind == "words":
            return build_text_embeddings("words", names, cache, dim=t.words_dim)
        raise ValueError(f"unknown encoder {kind!r} ({', '.join(text_encoder_names())})")

    out_dir = manifest.root / "embeddings"
    out_dir.mkdir(exist_ok=True)
    built = {}
    for kind in encoders:
        table = build(kind)

        path = atomic_write_stream(out_dir / f"{kind}.npy", lambda f, table=table: np.save(f, table))
        built[kind] = (table, path)
        if progress:
            print(f"{kind}: {table.shape[0]} labels x {table.shape[1]} -> {path}")
    return built
