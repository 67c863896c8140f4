"""What pretrained weights a params file needs, where each comes from, whether it is here; fetch what is missing.

    python -m mlc.weights PARAMS_FILE [--list]

Each weight comes through its own library into that library's cache, with the library's checks: torchvision
ResNets from download.pytorch.org (file-name hash checked) into the torch-hub cache; timm backbones, CvT (via
transformers), CLIP ``openai`` (via open_clip) and BERT (via transformers) from the Hugging Face hub into its
cache (``HF_HOME``; ``HF_ENDPOINT`` points at a mirror).  GloVe and the authors' released checkpoints are
fetched by hand: the table gives the exact command or link.  With ``MLC_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``)
nothing is downloaded: the table shows what is missing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mlc.config.params import RunParams
from mlc.core.online import hf_cached, offline
from mlc.modeling.backbones import weight_source
from mlc.modeling.clip import openai_weights
from mlc.runs.resolve import method_params

GLOVE_COMMAND = ("wget https://nlp.stanford.edu/data/glove.840B.300d.zip && unzip glove.840B.300d.zip "
                 "(2.0 GB; then set text.glove_path to the .txt file)")


@dataclass
class Weight:
    """One weight file a params file needs."""
    what: str                        # e.g. "q2l backbone resnet101"
    library: str                     # torchvision, timm, transformers, open_clip, or "by hand"
    source: str                      # URL, Hugging Face repo, or the command / link for a file fetched by hand
    present: bool
    where: str                       # the cached or expected file
    fetch: Callable[[], object] | None = None    # None: fetched by hand

    def row(self) -> dict:
        """The table row ``python -m mlc.weights`` prints."""
        return {"weight": self.what, "library": self.library, "present": "yes" if self.present else "no",
                "from": self.source, "file": self.where}


def _clip_weight(model_name: str, what: str) -> Weight:
    import open_clip
    source, cached = openai_weights(model_name)
    return Weight(what, "open_clip", source, cached is not None, cached or "open_clip's cache",
                  lambda: open_clip.create_model(model_name, pretrained="openai"))


def _bert_weight(model: str) -> Weight:
    if Path(model).is_dir():
        return Weight(f"BERT {model}", "transformers", "a local directory", True, model)
    cached = hf_cached(model)
    vocab = hf_cached(model, ("vocab.txt", "tokenizer.json"))

    def fetch():
        from transformers import AutoModel, AutoTokenizer
        AutoTokenizer.from_pretrained(model)
        return AutoModel.from_pretrained(model)
    return Weight(f"BERT {model} (label embeddings)", "transformers", f"https://huggingface.co/{model}",
                  bool(cached and vocab), cached or f"Hugging Face cache, {model}", fetch)


def needed_weights(params: RunParams) -> list[Weight]:
    """Every pretrained weight the params need (deduplicated), in the order a run meets them."""
    out: dict[str, Weight] = {}
    if params.clip is not None and params.clip.pretrained == "openai":
        out["clip:" + params.clip.model] = _clip_weight(params.clip.model, f"CLIP {params.clip.model} (openai)")
    elif params.clip is not None and params.clip.pretrained:
        path = params.resolve_path(params.clip.pretrained)
        out["file:" + str(path)] = Weight(f"CLIP {params.clip.model}", "by hand", "a local file", path.is_file(),
                                          str(path))
    for name in params.methods:
        cfg = method_params(params, name).model
        backbone = getattr(cfg, "backbone", None)
        if backbone and getattr(cfg, "pretrained", False):
            if cfg.backbone_weights:
                path = params.resolve_path(cfg.backbone_weights)
                out["file:" + str(path)] = Weight(f"{name} backbone {backbone}", "by hand", "model.backbone_weights",
                                                  path.is_file(), str(path))
            else:
                src = weight_source(backbone)
                if src is not None:
                    out["backbone:" + backbone] = Weight(f"{name} backbone {backbone}", src.library, src.source,
                                                         src.cached is not None, src.cached or "library cache",
                                                         src.fetch)
        clip_pretrained = getattr(cfg, "clip_pretrained", None)
        if clip_pretrained == "openai" and "clip:" + cfg.clip_model not in out:
            out["clip:" + cfg.clip_model] = _clip_weight(cfg.clip_model, f"{name} CLIP {cfg.clip_model} (openai)")
        image_checkpoint = getattr(cfg, "image_checkpoint", None)
        if image_checkpoint and not str(image_checkpoint).startswith(str(params.run_dir)):
            path = params.resolve_path(image_checkpoint)
            released = params.released
            out["file:" + str(path)] = Weight(f"{name} stage-1 image encoder", "by hand",
                                              released.download if released else "a stage-1 checkpoint",
                                              path.is_file(), str(path))
    encoders = set(params.text.encoders)
    if encoders & {"bert", "bert_plain"}:
        out["bert:" + params.text.bert_model] = _bert_weight(params.text.bert_model)
    if "glove" in encoders:
        path = params.resolve_path(params.text.glove_path) if params.text.glove_path else None
        out["glove"] = Weight("GloVe 840B.300d (label embeddings)", "by hand", GLOVE_COMMAND,
                              bool(path and path.is_file()), str(path) if path else "text.glove_path is not set")
    if params.released is not None:
        r = params.released
        path = params.resolve_path(r.checkpoint)
        out["file:" + str(path)] = Weight(f"released {r.model_name or r.method}", "by hand", r.download or r.url,
                                          path.is_file(), str(path))
        if r.config:
            cfg_path = params.resolve_path(r.config)
            out["file:" + str(cfg_path)] = Weight(f"released {r.model_name} config", "by hand", r.download or r.url,
                                                  cfg_path.is_file(), str(cfg_path))
    return list(out.values())


def fetch_missing(weights: list[Weight], progress: Callable[[str], None] = print) -> list[Weight]:
    """Download every missing weight that a library can fetch; returns those still missing (by hand, or
    everything when offline)."""
    left = []
    for w in weights:
        if w.present:
            continue
        if w.fetch is None or offline():
            left.append(w)
            continue
        progress(f"fetching {w.what} from {w.source} ({w.library}) ...")
        w.fetch()
        w.present = True
    return left


def table(weights: list[Weight]):
    """The weights as a pandas table (one row each)."""
    import pandas as pd
    return pd.DataFrame([w.row() for w in weights])


