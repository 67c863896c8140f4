"""One batch through a model, step by step: what each part makes, its shape, and where its code is.

The method notebooks call this before training (as Dive into Deep Learning shows a tensor's shape right after
the code that makes it)::

    batch = walkthrough.first_batch(params, method, n=4)
    walkthrough.shapes(model, batch["image"])        # a table: step, module, output shapes, code location

Each row is one call of a part of the model (forward hooks on its direct children, and on their children
with ``depth=2``), in the order the forward runs them.  The code location is the line where the part's class
is defined, relative to the checkout (``lib/mlc/methods/q2l/model.py:41``), or the torch class it is.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

from mlc.runs.data import method_data

_ROOT = Path(__file__).resolve().parents[3]


def describe(x) -> str:
    """A tensor as ``[4, 64, 128] float32``; tuples, lists and dicts of them, nested."""
    if isinstance(x, torch.Tensor):
        return f"[{', '.join(map(str, x.shape))}] {str(x.dtype).removeprefix('torch.')}"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in x.items() if _has_tensor(v)) + "}"
    if isinstance(x, (list, tuple)):
        inner = [describe(v) for v in x if _has_tensor(v)]
        return "(" + ", ".join(inner) + ")" if len(inner) != 1 else inner[0]
    return type(x).__name__


def _has_tensor(x) -> bool:
    if isinstance(x, torch.Tensor):
        return True
    if isinstance(x, dict):
        return any(_has_tensor(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return any(_has_tensor(v) for v in x)
    return False


def where(obj) -> str:
    """``lib/mlc/methods/q2l/model.py:41`` for a class, function or instance of the kit; ``torch.nn.Linear`` for one of
    torch's or another library's."""
    target = obj if isinstance(obj, type) or inspect.isfunction(obj) else type(obj)
    name = f"{target.__module__}.{target.__qualname__}"
    try:
        path = Path(inspect.getsourcefile(target)).resolve()
        line = inspect.getsourcelines(target)[1]
        rel = path.relative_to(_ROOT / "lib")
    except (TypeError, OSError, ValueError):
        return name
    return f"lib/{rel.as_posix()}:{line}"


def shapes(model: nn.Module, images: torch.Tensor, *args, depth: int = 1, only: list[str] | None = None, call=None):
    """Run ``model`` (eval mode, no gradients) on ``images`` and return a table of every call of its parts.

    ``depth``: 1 = the model's direct children (the layers of a ModuleList count as children), 2 = also
    theirs; ``only``: exactly these submodules (names as in ``model.named_modules()``).  Dropout and
    Identity, which change no shape, are left out.  ``call(model, images, *args)`` replaces the plain
    ``model(images, *args)``.  The last row is the model's own output."""
    import pandas as pd
    rows, hooks = [], []
    modules = dict(model.named_modules())
    containers = (nn.ModuleList, nn.ModuleDict)
    for name, module in modules.items():
        parts = name.split(".") if name else []
        # the layers of a ModuleList count as parts of the model itself (encoder.0 is a step like backbone)
        level = sum(not isinstance(modules[".".join(parts[:k + 1])], containers) for k in range(len(parts)))
        wanted = name in only if only is not None else 0 < level <= depth
        if wanted and not isinstance(module, (*containers, nn.Dropout, nn.Identity)):
            def hook(mod, inputs, output, name=name):
                rows.append({"module": name, "part": type(mod).__name__, "input": describe(inputs),
                             "output": describe(output), "code": where(mod)})
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = (call or (lambda m, x, *a: m(x, *a)))(model, images, *args)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    rows.append({"module": "(model output)", "part": type(model).__name__, "input": describe(images),
                 "output": describe(out), "code": where(type(model).forward)})
    table = pd.DataFrame(rows)
    table.index = range(1, len(table) + 1)
    table.index.name = "step"
    return table


def first_batch(params, method: str, n: int = 4, split: str = "train") -> dict:
    """The first ``n`` images of a split as the model sees them at evaluation (resized, normalised), with their
    targets: ``{"image": [n, 3, S, S], "target": [n, C], "index": [n]}``."""
    data = method_data(params, method)
    ds = data.datasets[split]
    eval_ds = data.datasets["test"]
    ds.transform = eval_ds.transform            # no augmentation for the walk-through
    items = [ds[i] for i in range(min(n, len(ds)))]
    return {key: torch.stack([torch.as_tensor(it[key]) for it in items]) for key in ("image", "target", "index")}
