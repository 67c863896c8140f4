"""CLIP through open_clip: OpenAI ViT-B/16 on real data, the toy CLIP in the toy world.

The toy CLIP is an ordinary open_clip model built from the kit's config ``mlc-toy-clip``
(``lib/mlc/clip_configs/``: a ViT with 8 px patches on 64 px images and a small text transformer),
pretrained contrastively on the toy world's captions by :func:`train_toy_clip` and saved as a plain
open_clip state dict.  Every consumer loads either model the same way::

    model, preprocess, tokenizer = load_clip("mlc-toy-clip", "outputs/toy/clip/mlc-toy-clip.pt")
    model, preprocess, tokenizer = load_clip("ViT-B-16", "/models/ViT-B-16.pt")   # or "openai" from the cache
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from mlc.core.online import hf_cached, offline, offline_hint
from mlc.core.progress import bar
from mlc.core.safe_load import UnsafeFileError
from mlc.modeling.backbones import MissingWeightsError

CONFIG_DIR = Path(__file__).parent / "clip_configs"
_registered = False


def _register_configs() -> None:
    global _registered
    if not _registered:
        import open_clip
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def load_clip(model_name: str, pretrained: str | None = None, device: str = "cpu"):
    """(model in eval mode, eval preprocess, tokenizer).  ``pretrained``: a local file, "openai" (open_clip's
    download into its cache; offline, the cached file only: see :mod:`mlc.core.online`), or None (random weights).
    A missing file is an error saying what to fetch."""
    import open_clip
    _register_configs()
    config = open_clip.get_model_config(model_name) or {}
    if pretrained == "openai" and not config.get("quick_gelu", False):
        # open_clip builds e.g. ViT-B-16 with nn.GELU; OpenAI's weights were trained with QuickGELU, and loading
        # them into a GELU model changes every output without a word
        raise ValueError(f"CLIP {model_name!r} is built with nn.GELU, but OpenAI's weights were trained with "
                         f"QuickGELU: use {model_name + '-quickgelu'!r} (as the kit's paper configs do)")
    if pretrained not in (None, "openai") and not Path(pretrained).is_file():
        hint = ("train it with notebooks/02_toy_clip.ipynb" if model_name.startswith("mlc-") else
                f"download the OpenAI weights (e.g. ViT-B-16.pt from openaipublic) and save them as {pretrained}")
        raise MissingWeightsError(f"CLIP weights not found: {pretrained}; {hint}")
    if pretrained == "openai" and offline():         # no network: the cached file, or an error at once
        pretrained = _cached_openai(model_name)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device,
                                                                     output_dict=True)
    except pickle.UnpicklingError as e:
        # torch's own message advises weights_only=False, which would run the file's code: the kit never does
        raise UnsafeFileError(f"{pretrained}: the file holds Python objects outside the safe list, and loading them "
                              f"could run code from it ({str(e).splitlines()[0][:120]}); nothing was loaded. A CLIP "
                              f"weight file is a state dict (torch.save(model.state_dict(), path)) or OpenAI's "
                              f"TorchScript file") from None
    except RuntimeError as e:
        if pretrained == "openai":
            raise MissingWeightsError(f"OpenAI weights for {model_name} could not be downloaded by open_clip ({e}); "
                                      f"set clip.pretrained to a local file such as ViT-B-16.pt") from None
        raise
    return model.eval(), preprocess, open_clip.get_tokenizer(model_name)


def openai_weights(model_name: str) -> tuple[str, str | None]:
    """(where open_clip downloads ``model_name``'s OpenAI weights from, the file already in its caches or None):
    the Hugging Face repo of open_clip's pretrained config, or the legacy URL cache ~/.cache/clip.  No request."""
    import open_clip
    _register_configs()
    cfg = open_clip.get_pretrained_cfg(model_name, "openai") or {}
    hub = (cfg.get("hf_hub") or "").rstrip("/")
    path = hf_cached(hub, ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")) if hub else None
    legacy = Path("~/.cache/clip").expanduser() / Path(cfg.get("url", "none")).name
    if path is None and legacy.is_file():
        path = str(legacy)
    return (f"https://huggingface.co/{hub}" if hub else cfg.get("url", "?")), path


def _cached_openai(model_name: str) -> str:
    """The OpenAI weights of ``model_name`` in open_clip's caches; missing is an error at once."""
    source, path = openai_weights(model_name)
    if path is None:
        raise MissingWeightsError(f"OpenAI weights for {model_name} are not in open_clip's cache ({source}, or "
                                  f"~/.cache/clip); set clip.pretrained to a local file such as ViT-B-16.pt\n"
                                  + offline_hint("them"))
    return path


def encode_text(model, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)``, computed on the batch's own length where that gives the same result.

    Tokenizers pad every prompt to the context length (77 for OpenAI's CLIP), while a label prompt such as
    "a photo of a traffic light." is about ten tokens.  In a CLIP text tower with a causal mask that pools at
    the end-of-text token, no position up to that token attends to a later one, so the padding never reaches
    the pooled feature: cutting the batch after its longest prompt gives the same embedding (to float
    rounding) in a fraction of the work.  Other text towers (Hugging Face ones, other pooling) are run as
    they are."""
    import open_clip
    from open_clip.transformer import text_global_pool
    trimmable = (isinstance(model, open_clip.CLIP) and getattr(model, "text_pool_type", None) == "argmax"
                 and getattr(model, "attn_mask", None) is not None and tokens.ndim == 2)
    if not trimmable:
        return model.encode_text(tokens)
    length = int(tokens.argmax(dim=-1).max()) + 1            # the end-of-text token has the highest id
    text = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = text_global_pool(model.ln_final(x), text, "argmax")
    if model.text_projection is None:
        return x
    return model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection


PROMPT_BATCH = 256      # prompts per text-tower forward; at 77 tokens each, a few hundred MB of activations


@torch.inference_mode()
def encode_prompts(model, tokenizer, names: list[str], templates: list[str], normalize_each: bool = True,
                   normalize_mean: bool = True, batch_size: int = PROMPT_BATCH, progress: bool = False) -> np.ndarray:
    """[C, E]: per label the mean over templates of its text embedding.  CLIP's zero-shot recipe normalises
    each prompt and the mean; QKS averages the raw outputs (both flags False).

    Every (label, template) prompt goes through the text tower in batches of ``batch_size`` whatever label it
    belongs to: one label at a time made NUS-WIDE's 1,006 labels 1,006 forwards of one prompt for MKT (85 each
    for QKS), too small to keep a GPU or the CPU's matrix units busy.  A prompt's embedding does not depend on
    the other prompts of its batch (every prompt is padded to the context length), so the result is the
    per-label one to float rounding (tests/test_clip.py)."""
    if not names or not templates:
        raise ValueError(f"encode_prompts needs labels and templates (got {len(names)} labels, "
                         f"{len(templates)} templates)")
    prompts = [template.format(name) for name in names for template in templates]
    device = next(model.parameters()).device
    starts = range(0, len(prompts), batch_size)
    if progress and len(starts) > 1:
        starts = bar(starts, desc=f"text embeddings ({len(prompts)} prompts)", unit="batch")
    chunks = [encode_text(model, tokenizer(prompts[i:i + batch_size]).to(device)).float().cpu() for i in starts]
    emb = torch.cat(chunks).view(len(names), len(templates), -1)
    if normalize_each:
        emb = emb / emb.norm(dim=-1, keepdim=True)
    emb = emb.mean(1)
    if normalize_mean:
        emb = emb / emb.norm(dim=-1, keepdim=True)
    return emb.numpy()


def visual_tokens(visual, images: torch.Tensor) -> torch.Tensor:
    """All tokens of an open_clip ViT after ``ln_post``, CLS first, without the projection: [B, 1 + N, W].

    (open_clip's forward pools to the CLS token; MKT and QKS modify CLIP to keep every token.)
    """
    x = visual._embeds(images)                 # conv1 -> + CLS -> + positions -> ln_pre, [B, 1 + N, W]
    return visual.ln_post(run_sequence_first(visual.transformer, x))


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:               # a device autocast does not know (the meta device, shapes only)
        return False


def run_sequence_first(transformer, x: torch.Tensor) -> torch.Tensor:
    """``transformer(x)`` for a batch-first [B, L, W] ``x``, computed sequence-first ([L, B, W], contiguous).

    open_clip builds its attention batch-first, and ``nn.MultiheadAttention`` then transposes its input to
    [L, B, W] without a copy.  Where that input needs no gradient (frozen blocks: MKT's first ten, its teacher,
    QKS's whole CLIP) in training mode, torch multiplies the transposed tensor by the packed q/k/v weight as a
    batched product over all L positions, a copy of the weight for each: 10 of MKT's 12 blocks took 22 ms each
    where a contiguous input takes 7 (benchmarks/vs_official.py found MKT's step 0.86x the official one, whose CLIP
    is sequence-first).  The blocks see what open_clip's own ``batch_first=False`` mode gives them; LayerNorms and
    MLPs act on the last dimension, so only the attention's layout flag changes, for the call.  A transformer of
    another kind, or one on torch's fused inference path, runs as it is."""
    blocks = getattr(transformer, "resblocks", None)
    # in eval mode without gradients or autocast torch's fused attention takes batch-first input as it is (the
    # faster path); under autocast (a frozen CLIP in a bf16 or fp16 step) it does not, and the slow product is
    # worse there: the weight copy per position is materialised in the low precision, 75 % of MKT's CPU step
    fused = not transformer.training and not torch.is_grad_enabled() and not _autocast_on(x.device.type)
    if (blocks is None or fused or not getattr(transformer, "batch_first", False)
            or getattr(transformer, "grad_checkpointing", False)
            or not all(isinstance(getattr(b, "attn", None), torch.nn.MultiheadAttention) and b.attn.batch_first
                       for b in blocks)):
        return transformer(x)
    x = x.transpose(0, 1).contiguous()
    try:
        for block in blocks:
            block.attn.batch_first = False
        for block in blocks:
            x = block(x)
    finally:
        for block in blocks:
            block.attn.batch_first = True
    return x.transpose(0, 1)


def grid_size(visual) -> tuple[int, int]:
    """(h, w) of the token grid of a CLIP ViT's visual tower."""
    g = visual.grid_size
    return (g, g) if isinstance(g, int) else tuple(g)


