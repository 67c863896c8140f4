"""Whether the kit may download pretrained weights, and where the libraries' caches hold them.

Online (the default), every pretrained weight a params file needs comes through its own library's download,
into that library's cache, with that library's checks: torchvision's URL with its hash (``torch.hub``), timm's
and transformers' Hugging Face repos, open_clip's ``pretrained="openai"``.  Offline, no network is tried and
a missing weight is an error at once that says what to fetch.  Offline is ``MLC_OFFLINE=1`` (the kit's switch:
it covers torchvision, timm, open_clip and transformers alike) or Hugging Face's own ``HF_HUB_OFFLINE=1``.
"""
from __future__ import annotations

import os

OFFLINE_ENV = "MLC_OFFLINE"
_TRUE = {"1", "true", "yes", "on"}


def offline() -> bool:
    """True when ``MLC_OFFLINE`` or ``HF_HUB_OFFLINE`` is set: nothing is downloaded."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in (OFFLINE_ENV, "HF_HUB_OFFLINE"))


def hf_cached(repo_id: str, filenames: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")) -> str | None:
    """The first of ``filenames`` of a Hugging Face repo already in the local hub cache, without any request."""
    from huggingface_hub import try_to_load_from_cache
    for name in filenames:
        path = try_to_load_from_cache(repo_id.rstrip("/"), name)
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def offline_hint(what: str) -> str:
    """The second line of an offline error: how to get ``what`` on a machine with internet."""
    return (f"  Offline ({OFFLINE_ENV} or HF_HUB_OFFLINE is set): nothing was downloaded. With internet, "
            f"unset it and run `python -m mlc.weights PARAMS_FILE` to fetch {what} into the libraries' caches.")
