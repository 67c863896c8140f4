"""A method's params with every reference resolved: the run's toy CLIP, another method's best checkpoint, file
paths against the params' checkout, and where label-name embeddings are cached (the run's output root), so that
nothing depends on the current folder."""
from __future__ import annotations

import dataclasses

from mlc.config.params import MethodParams, RunParams, names_a_file
from mlc.runs.toy_clip import clip_checkpoint


def no_such_method(params: RunParams, name: str) -> str:
    """The error for a method name the params do not define."""
    return f"{params.source}: no method {name!r} under 'methods' (has {', '.join(params.methods)})"


def method_params(params: RunParams, name: str) -> MethodParams:
    """The method's params with references resolved: ``clip_pretrained: run`` (the run's CLIP, see notebook
    02), ``image_checkpoint: run:<method>`` (another method's best checkpoint), every relative file path of the
    model config (its path fields) against the params' checkout, and ``embedding_cache`` (unset: the run's
    ``<output_root>/embeddings``, where ``build_run_embeddings`` caches too)."""
    if name not in params.methods:
        raise KeyError(no_such_method(params, name))
    mp = params.methods[name]
    cfg, updates = mp.model, {}
    if getattr(cfg, "clip_pretrained", None) == "run":
        if params.clip is None:
            raise ValueError(f"{params.source}: methods.{name}.model.clip_pretrained is 'run' but the params have "
                             f"no 'clip' section")
        updates.update(clip_pretrained=str(clip_checkpoint(params)), clip_model=params.clip.model)
    ref = getattr(cfg, "image_checkpoint", None)
    if isinstance(ref, str) and ref.startswith("run:"):
        updates["image_checkpoint"] = str(params.run_dir / ref[4:] / "checkpoints" / "best.pt")
    for f in dataclasses.fields(cfg):
        if not f.metadata.get("path"):
            continue
        value = updates.get(f.name, getattr(cfg, f.name))
        if f.name == "embedding_cache" and value is None:
            updates[f.name] = str(params.resolve_path(params.output_root) / "embeddings")
        elif names_a_file(value) or (f.name == "embedding_cache" and isinstance(value, str)):  # a bare folder too
            resolved = str(params.resolve_path(value))      # ~ expanded; relative: against the checkout
            if resolved != value:
                updates[f.name] = resolved
    return dataclasses.replace(mp, model=dataclasses.replace(cfg, **updates)) if updates else mp
