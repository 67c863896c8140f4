"""A method's params with the run-relative references resolved (the run's toy CLIP, another method's best
checkpoint)."""
from __future__ import annotations

from mlc.config.params import MethodParams, RunParams
from mlc.runs.toy_clip import clip_checkpoint


def no_such_method(params: RunParams, name: str) -> str:
    """The error for a method name the params do not define."""
    return f"{params.source}: no method {name!r} under 'methods' (has {', '.join(params.methods)})"


def method_params(params: RunParams, name: str) -> MethodParams:
    """The method's params with run-relative references resolved: ``clip_pretrained: run`` (the run's CLIP,
    see notebook 02) and ``image_checkpoint: run:<method>`` (another method's best checkpoint)."""
    import dataclasses
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
    return dataclasses.replace(mp, model=dataclasses.replace(cfg, **updates)) if updates else mp
